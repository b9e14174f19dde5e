"""MediaService over gRPC: input checks, then the library."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parley.v1 import media_pb2, media_pb2_grpc
from parley_common.errors import InvalidRequest, PayloadTooLarge, grpc_errors

from .library import MediaLibrary
from .records import require_media_id, require_user_id
from .sniffing import SNIFF_BYTES, FileType

MAX_CHUNK = 1024 * 1024
MAX_IDS = 64
MAX_FILENAME = 255
MAX_KEY = 200


class MediaServicer(media_pb2_grpc.MediaServiceServicer):  # type: ignore[misc]
    def __init__(self, library: MediaLibrary) -> None:
        self.library = library

    @grpc_errors
    async def Upload(
        self, request_iterator: AsyncIterator[media_pb2.UploadChunk], context: grpc.aio.ServicerContext
    ) -> media_pb2.Media:
        start: media_pb2.UploadStart | None = None
        declared = ""
        received = bytearray()
        file_type: FileType | None = None
        limit = self.library.max_bytes
        async for chunk in request_iterator:
            part = chunk.WhichOneof("part")
            if start is None:
                if part != "start":
                    raise InvalidRequest("an upload starts with `start`")
                start = chunk.start
                require_user_id(start.user_id)
                if len(start.filename) > MAX_FILENAME:
                    raise InvalidRequest(f"filename is longer than {MAX_FILENAME} characters")
                declared = self.library.check_start(start.content_type, start.declared_size)
                continue
            if part != "data":
                raise InvalidRequest("`start` comes once, first")
            if len(chunk.data) > MAX_CHUNK:
                raise InvalidRequest(f"chunks are at most {MAX_CHUNK} bytes")
            received += chunk.data
            if len(received) > limit:
                # Stop reading at once: the rest of the file is never received.
                raise PayloadTooLarge(f"the file is larger than {limit} bytes")
            if file_type is None and len(received) >= SNIFF_BYTES:
                # Refuse a file of the wrong type on its first bytes, not after all of them.
                file_type = self.library.identify_head(bytes(received[:SNIFF_BYTES]), declared)
        if start is None:
            raise InvalidRequest("an upload starts with `start`")
        record = await self.library.ingest(start.user_id, bytes(received), declared)
        return self.library.to_proto(record)

    @grpc_errors
    async def CreateUpload(
        self, request: media_pb2.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.PendingUpload:
        require_user_id(request.user_id)
        if len(request.filename) > MAX_FILENAME:
            raise InvalidRequest(f"filename is longer than {MAX_FILENAME} characters")
        return await self.library.create_upload(
            request.user_id, request.content_type, request.size_bytes, request.filename
        )

    @grpc_errors
    async def CompleteUpload(
        self, request: media_pb2.CompleteUploadRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.Media:
        require_user_id(request.user_id)
        require_media_id(request.media_id)
        return self.library.to_proto(await self.library.complete_upload(request.user_id, request.media_id))

    @grpc_errors
    async def GetMedia(self, request: media_pb2.GetMediaRequest, context: grpc.aio.ServicerContext) -> media_pb2.Media:
        require_user_id(request.user_id)
        require_media_id(request.media_id)
        return self.library.to_proto(await self.library.get(request.user_id, request.media_id))

    @grpc_errors
    async def DeleteMedia(
        self, request: media_pb2.DeleteMediaRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.DeleteMediaResponse:
        require_user_id(request.user_id)
        require_media_id(request.media_id)
        await self.library.delete(request.user_id, request.media_id)
        return media_pb2.DeleteMediaResponse()

    @grpc_errors
    async def CheckMedia(
        self, request: media_pb2.CheckMediaRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.CheckMediaResponse:
        require_user_id(request.user_id)
        _require_ids(request.media_ids)
        await self.library.check(request.user_id, request.media_ids)
        return media_pb2.CheckMediaResponse()

    @grpc_errors
    async def ResolveImages(
        self, request: media_pb2.ResolveImagesRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.ResolveImagesResponse:
        require_user_id(request.user_id)
        _require_ids(request.media_ids)
        if request.detail not in ("", "high", "low"):
            raise InvalidRequest('detail must be "high" or "low"', code="invalid_detail")
        images = await self.library.resolve(request.user_id, list(request.media_ids), request.detail, request.delivery)
        return media_pb2.ResolveImagesResponse(images=images)

    @grpc_errors
    async def GenerateImage(
        self, request: media_pb2.GenerateImageRequest, context: grpc.aio.ServicerContext
    ) -> media_pb2.GeneratedImage:
        require_user_id(request.user_id)
        if len(request.idempotency_key) > MAX_KEY or len(request.size) > 16:
            raise InvalidRequest("idempotency_key or size is too long")
        record = await self.library.generate(request.user_id, request.prompt, request.size, request.idempotency_key)
        reply = media_pb2.GeneratedImage(
            media=self.library.to_proto(record),
            generator=record.generator,
            revised_prompt=record.revised_prompt,
        )
        high = record.rendition("high")
        if request.include_data and high is not None:
            reply.data = await self.library.store.get(high.key, high.size_bytes + 1024)
            reply.mime_type = high.mime_type
        return reply


def _require_ids(media_ids: list[str]) -> None:
    if len(media_ids) > MAX_IDS:
        raise InvalidRequest(f"at most {MAX_IDS} media ids")
    for media_id in media_ids:
        require_media_id(media_id)
