"""The gRPC client of the media service, used by the gateway and the orchestrator.

Failed calls raise the typed ParleyError the server meant (NotFound for another user's media,
InvalidRequest for an unusable file, PayloadTooLarge past the size limit, …). Idempotent calls
are retried by gRPC itself when the service is briefly unavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from parley.v1 import chat_pb2, media_pb2, media_pb2_grpc
from parley_common.clients.grpc_calls import ServiceClient, retrying_config
from parley_common.errors import from_grpc
from parley_common.observability.telemetry import grpc_metadata

# Upload bytes go in messages of this size (the service takes at most 1 MiB a chunk).
UPLOAD_CHUNK_BYTES = 256 * 1024
# Replies carry prompt images inline (the service caps them well below this).
MAX_REPLY_BYTES = 16 * 1024 * 1024

_IDEMPOTENT = ["CompleteUpload", "GetMedia", "DeleteMedia", "CheckMedia", "ResolveImages"]
_SERVICE_CONFIG = retrying_config("parley.v1.MediaService", _IDEMPOTENT, max_attempts=4, max_backoff_s=1)


class MediaClient(ServiceClient):
    def __init__(self, target: str, timeout_s: float = 30.0, processing_timeout_s: float = 180.0) -> None:
        super().__init__(
            "media", target, _SERVICE_CONFIG, timeout_s, options=[("grpc.max_receive_message_length", MAX_REPLY_BYTES)]
        )
        self.stub = media_pb2_grpc.MediaServiceStub(self.channel)
        # Calls that process a file or generate an image (an upload also waits for its bytes).
        self.processing_timeout_s = processing_timeout_s

    async def upload(
        self,
        user_id: str,
        content_type: str,
        filename: str,
        chunks: AsyncIterator[bytes],
        declared_size: int = 0,
    ) -> media_pb2.Media:
        """Stream a file to the service as it arrives; an error raised by `chunks` (the client
        went away, the body limit) cancels the call and propagates."""
        call = self.stub.Upload(timeout=self.processing_timeout_s, metadata=grpc_metadata())
        try:
            try:
                start = media_pb2.UploadStart(
                    user_id=user_id, content_type=content_type, filename=filename, declared_size=declared_size
                )
                await call.write(media_pb2.UploadChunk(start=start))
                async for piece in chunks:
                    for offset in range(0, len(piece), UPLOAD_CHUNK_BYTES):
                        await call.write(media_pb2.UploadChunk(data=piece[offset : offset + UPLOAD_CHUNK_BYTES]))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass  # the service ended the call early (it refused the file): its status says why
            return await call
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err) from None
        finally:
            if not call.done():
                call.cancel()

    async def create_upload(
        self, user_id: str, content_type: str, size_bytes: int, filename: str = ""
    ) -> media_pb2.PendingUpload:
        return await self._call(
            self.stub.CreateUpload,
            media_pb2.CreateUploadRequest(
                user_id=user_id, content_type=content_type, size_bytes=size_bytes, filename=filename
            ),
        )

    async def complete_upload(self, user_id: str, media_id: str) -> media_pb2.Media:
        return await self._call(
            self.stub.CompleteUpload,
            media_pb2.CompleteUploadRequest(user_id=user_id, media_id=media_id),
            self.processing_timeout_s,
        )

    async def get_media(self, user_id: str, media_id: str) -> media_pb2.Media:
        return await self._call(self.stub.GetMedia, media_pb2.GetMediaRequest(user_id=user_id, media_id=media_id))

    async def delete_media(self, user_id: str, media_id: str) -> None:
        await self._call(self.stub.DeleteMedia, media_pb2.DeleteMediaRequest(user_id=user_id, media_id=media_id))

    async def check_media(self, user_id: str, media_ids: list[str]) -> None:
        """NotFound (code media_not_found) unless every id is media of this user."""
        await self._call(self.stub.CheckMedia, media_pb2.CheckMediaRequest(user_id=user_id, media_ids=media_ids))

    async def resolve_images(
        self,
        user_id: str,
        media_ids: list[str],
        detail: str = "high",
        delivery: media_pb2.ImageDelivery.ValueType = media_pb2.IMAGE_DELIVERY_INLINE,
    ) -> list[chat_pb2.ImagePart]:
        reply = await self._call(
            self.stub.ResolveImages,
            media_pb2.ResolveImagesRequest(user_id=user_id, media_ids=media_ids, detail=detail, delivery=delivery),
        )
        return list(reply.images)

    async def generate_image(
        self, user_id: str, prompt: str, size: str = "", idempotency_key: str = "", include_data: bool = False
    ) -> media_pb2.GeneratedImage:
        return await self._call(
            self.stub.GenerateImage,
            media_pb2.GenerateImageRequest(
                user_id=user_id,
                prompt=prompt,
                size=size,
                idempotency_key=idempotency_key,
                include_data=include_data,
            ),
            self.processing_timeout_s,
        )


__all__ = ["MediaClient"]
