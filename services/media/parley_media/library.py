"""The media of every user: taking files in (checked, processed, stored), handing them out as
presigned URLs or prompt images, generating new ones.

A media exists once its record is stored, and the record is written last: a failure half-way
leaves renditions nobody points at (overwritten on a retry with the same id), never a record
that points at missing renditions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable

from parley.v1 import chat_pb2, media_pb2
from parley_common.errors import Conflict, Gone, InvalidRequest, NotFound, ParleyError, PayloadTooLarge

from .cpu_pool import CpuPool
from .generators import MAX_PROMPT_CHARS, ImageGenerator
from .images import Encoded, ImageLimits, decoded_bytes, process_image
from .objects import ObjectStore
from .records import (
    UPLOADS_PREFIX,
    MediaRecord,
    PendingUploadRecord,
    RenditionRecord,
    new_media_id,
    pending_key,
    record_key,
    rendition_key,
    upload_key,
)
from .settings import MediaSettings
from .sniffing import SNIFF_BYTES, FileType, check_declared, identify
from .video import VideoLimits, process_video
from .video_pool import VideoPool

log = logging.getLogger(__name__)
_KINDS = {"image": media_pb2.MEDIA_KIND_IMAGE, "video": media_pb2.MEDIA_KIND_VIDEO}


def _now_ms() -> int:
    return int(time.time() * 1000)


class MediaLibrary:
    def __init__(
        self,
        settings: MediaSettings,
        store: ObjectStore,
        cpu: CpuPool,
        generator: ImageGenerator,
        videos: VideoPool,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cpu = cpu
        self.videos = videos
        self.generator = generator
        self.max_bytes = settings.media_max_upload_bytes
        self.image_limits = ImageLimits(
            max_pixels=settings.media_max_pixels,
            high_px=settings.media_high_px,
            low_px=settings.media_low_px,
            thumb_px=settings.media_thumb_px,
            output_format=settings.media_output_format,
            quality=settings.media_quality,
            webp_method=settings.media_webp_method,
        )
        self.video_limits = VideoLimits(
            max_duration_s=settings.media_max_video_s,
            frames=settings.media_video_frames,
            max_fps=settings.media_video_max_fps,
            decode_pixels=settings.media_video_decode_pixels,
        )

    # taking files in

    def check_start(self, content_type: str, declared_size: int) -> str:
        """Refuse a declared type or size before any byte is read; the normalized declared type."""
        if declared_size > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than {self.max_bytes} bytes")
        return check_declared(content_type)

    def identify_head(self, head: bytes, content_type: str) -> FileType:
        return identify(head[:SNIFF_BYTES], content_type)

    async def ingest(
        self,
        user_id: str,
        data: bytes,
        content_type: str,
        *,
        media_id: str | None = None,
        origin: str = "upload",
        prompt: str = "",
        generator: str = "",
        revised_prompt: str = "",
    ) -> MediaRecord:
        """Check, process and store a file; InvalidRequest (nothing stored) when it is unusable."""
        if not data:
            raise InvalidRequest("the file is empty", code="empty_file")
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(f"the file is larger than {self.max_bytes} bytes")
        file_type = identify(data[:SNIFF_BYTES], content_type)
        started = time.perf_counter()
        if file_type.is_video:
            # In a child process with a deadline: never on the image threads (video_pool).
            video = await self.videos.run(process_video, data, file_type, self.video_limits, self.image_limits)
            width, height, duration_ms, frame_count, renditions = (
                video.width,
                video.height,
                video.duration_ms,
                1,
                video.renditions,
            )
        else:
            memory = await self.cpu.peek(decoded_bytes, data, file_type, self.image_limits)
            if memory > self.cpu.memory.total:
                raise InvalidRequest(
                    f"the image would need {memory // 1_000_000} MB to process, more than the "
                    f"{self.cpu.memory.total // 1_000_000} MB this service has for images",
                    code="image_too_large",
                )
            image = await self.cpu.run(process_image, data, file_type, self.image_limits, memory=memory)
            width, height, duration_ms, frame_count, renditions = (
                image.width,
                image.height,
                0,
                image.frame_count,
                image.renditions,
            )
        processed_ms = round((time.perf_counter() - started) * 1000, 1)
        media_id = media_id or new_media_id()
        stored = await self._store_renditions(user_id, media_id, renditions)
        record = MediaRecord(
            id=media_id,
            user_id=user_id,
            kind="video" if file_type.is_video else "image",
            source_mime_type=file_type.mime_type,
            width=width,
            height=height,
            duration_ms=duration_ms,
            frame_count=frame_count,
            source_size_bytes=len(data),
            created_at_ms=_now_ms(),
            origin="generated" if origin == "generated" else "upload",
            prompt=prompt,
            generator=generator,
            revised_prompt=revised_prompt,
            renditions=stored,
        )
        await self.store.put_json(record_key(user_id, media_id), record.model_dump())
        log.info(
            "media stored",
            extra={
                "media_id": media_id,
                "type": file_type.mime_type,
                "bytes": len(data),
                "processing_ms": processed_ms,
                "origin": record.origin,
            },
        )
        return record

    async def _store_renditions(self, user_id: str, media_id: str, renditions: list[Encoded]) -> list[RenditionRecord]:
        records = [
            RenditionRecord(
                name=r.name,
                key=rendition_key(user_id, media_id, r.name, r.mime_type),
                mime_type=r.mime_type,
                width=r.width,
                height=r.height,
                size_bytes=len(r.data),
                at_ms=r.at_ms,
            )
            for r in renditions
        ]
        await asyncio.gather(
            *(self.store.put(rec.key, r.data, r.mime_type) for rec, r in zip(records, renditions, strict=True))
        )
        return records

    # presigned uploads

    async def create_upload(
        self, user_id: str, content_type: str, size_bytes: int, filename: str
    ) -> media_pb2.PendingUpload:
        declared = self.check_start(content_type, size_bytes)
        media_id = new_media_id()
        now = _now_ms()
        expiry_s = self.settings.media_upload_expiry_s
        pending = PendingUploadRecord(
            media_id=media_id,
            user_id=user_id,
            content_type=declared,
            filename=filename,
            declared_size=size_bytes,
            created_at_ms=now,
            expires_at_ms=now + expiry_s * 1000,
        )
        await self.store.put_json(pending_key(user_id, media_id), pending.model_dump())
        # The store refuses a larger file itself: the declared size when there is one.
        max_bytes = size_bytes or self.max_bytes
        form = self.store.presign_post(upload_key(user_id, media_id), declared, max_bytes, expiry_s)
        return media_pb2.PendingUpload(
            media_id=media_id,
            url=form.url,
            method="POST",
            fields=form.fields,
            expires_at_ms=pending.expires_at_ms,
            max_bytes=max_bytes,
        )

    async def complete_upload(self, user_id: str, media_id: str) -> MediaRecord:
        try:
            return await self.get(user_id, media_id)  # completed before: the same media again
        except NotFound:
            pass
        try:
            pending = PendingUploadRecord.model_validate(await self.store.get_json(pending_key(user_id, media_id)))
        except NotFound:
            raise NotFound("no such upload", code="upload_not_found") from None
        staged = (upload_key(user_id, media_id), pending_key(user_id, media_id))
        if _now_ms() > pending.expires_at_ms:
            await self.store.delete(*staged)
            raise Gone("the upload expired; start a new one", code="upload_expired")
        uploaded = await self.store.stat(staged[0])
        if uploaded is None:
            raise Conflict("nothing has been uploaded to the upload URL yet", code="upload_incomplete")
        # The declared size, else the limit: the store enforces it too, when it honours the
        # form's content-length-range (MinIO, S3, SeaweedFS do).
        max_bytes = min(pending.declared_size or self.max_bytes, self.max_bytes)
        try:
            if uploaded.size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than {max_bytes} bytes (its declared size or the limit)")
            data = await self.store.get(staged[0], max_bytes)
            record = await self.ingest(user_id, data, pending.content_type, media_id=media_id)
        except InvalidRequest:
            await self.store.delete(*staged)  # refused for good: nothing of it stays
            raise
        await self.store.delete(*staged)
        return record

    async def sweep_uploads(self, start_after: str = "") -> str:
        """One bounded pass over pending uploads: remove those past their expiry plus the grace
        (record and object), and upload objects left without a record that long. Looks at no
        more than `media_upload_sweep_batch` objects; returns where the next pass goes on
        ("" once the end is reached, so the next pass starts over)."""
        now = _now_ms()
        grace_ms = self.settings.media_upload_sweep_grace_s * 1000
        # An object without a record: its upload URL expired this long after it was written.
        orphan_ms = self.settings.media_upload_expiry_s * 1000 + grace_ms
        listed = await self.store.list_objects(UPLOADS_PREFIX, start_after, self.settings.media_upload_sweep_batch)
        names = {o.key for o in listed}
        doomed: list[str] = []
        for obj in listed:
            if obj.key.endswith(".json"):
                try:
                    raw = await self.store.get_json(obj.key)
                    expires_at_ms = PendingUploadRecord.model_validate(raw).expires_at_ms
                except NotFound:
                    continue  # completed meanwhile
                except ValueError:
                    expires_at_ms = obj.modified_ms  # unreadable: as old as it is
                if expires_at_ms + grace_ms < now:
                    doomed += [obj.key, obj.key.removesuffix(".json")]
            elif obj.modified_ms + orphan_ms < now and obj.key + ".json" not in names:
                if await self.store.stat(obj.key + ".json") is None:
                    doomed.append(obj.key)
        if doomed:
            await self.store.delete(*dict.fromkeys(doomed))
            log.info("expired uploads removed", extra={"objects": len(doomed)})
        if len(listed) < self.settings.media_upload_sweep_batch:
            return ""
        return listed[-1].key

    # handing media out

    async def get(self, user_id: str, media_id: str) -> MediaRecord:
        try:
            raw = await self.store.get_json(record_key(user_id, media_id))
        except NotFound:
            raise NotFound("media not found", code="media_not_found") from None
        return MediaRecord.model_validate(raw)

    async def delete(self, user_id: str, media_id: str) -> None:
        record = await self.get(user_id, media_id)
        # The record first: from then on the media does not exist, whatever happens to the rest.
        await self.store.delete(record_key(user_id, media_id))
        await self.store.delete(*(r.key for r in record.renditions))

    async def check(self, user_id: str, media_ids: Iterable[str]) -> None:
        """NotFound (media_not_found) naming the first id that is not media of this user."""
        ids = list(dict.fromkeys(media_ids))
        found = await asyncio.gather(*(self.store.stat(record_key(user_id, m)) for m in ids))
        for media_id, stat in zip(ids, found, strict=True):
            if stat is None:
                raise NotFound(f"media {media_id} not found", code="media_not_found")

    def to_proto(self, record: MediaRecord, expiry_s: int | None = None) -> media_pb2.Media:
        """The media with presigned GET URLs for every rendition."""
        expiry_s = expiry_s or self.settings.media_url_expiry_s
        return media_pb2.Media(
            id=record.id,
            kind=_KINDS[record.kind],
            source_mime_type=record.source_mime_type,
            width=record.width,
            height=record.height,
            duration_ms=record.duration_ms,
            frame_count=record.frame_count,
            source_size_bytes=record.source_size_bytes,
            created_at_ms=record.created_at_ms,
            origin=record.origin,
            prompt=record.prompt,
            renditions=[
                media_pb2.Rendition(
                    name=r.name,
                    url=self.store.presign_get(r.key, expiry_s),
                    mime_type=r.mime_type,
                    width=r.width,
                    height=r.height,
                    size_bytes=r.size_bytes,
                    at_ms=r.at_ms,
                )
                for r in record.renditions
            ],
            urls_expire_at_ms=_now_ms() + expiry_s * 1000,
        )

    async def resolve(
        self, user_id: str, media_ids: list[str], detail: str, delivery: media_pb2.ImageDelivery.ValueType
    ) -> list[chat_pb2.ImagePart]:
        """The prompt images of these media, in order: an image's rendition for `detail`, a
        video's poster and sampled frames. Another user's id is NotFound."""
        detail = "low" if detail == "low" else "high"
        records = await asyncio.gather(*(self.get(user_id, m) for m in dict.fromkeys(media_ids)))
        chosen: list[tuple[str, RenditionRecord, str]] = []
        for record in records:
            main = record.rendition(detail) or record.rendition("high")
            if main is not None:
                chosen.append((record.id, main, detail))
            chosen.extend((record.id, frame, "low") for frame in record.frames())
        if len(chosen) > self.settings.media_prompt_max_images:
            raise InvalidRequest(
                f"the message carries {len(chosen)} images (a video counts its frames); "
                f"at most {self.settings.media_prompt_max_images} are allowed",
                code="too_many_images",
            )
        if delivery == media_pb2.IMAGE_DELIVERY_URL:
            expiry_s = self.settings.media_provider_url_expiry_s
            return [
                _image_part(media_id, r, part_detail, url=self.store.presign_get(r.key, expiry_s))
                for media_id, r, part_detail in chosen
            ]
        total = sum(r.size_bytes for _, r, _ in chosen)
        if total > self.settings.media_prompt_max_inline_bytes:
            raise InvalidRequest(
                f"the message's images are {total} bytes, more than {self.settings.media_prompt_max_inline_bytes}; "
                'send fewer, or with "image_detail": "low"',
                code="images_too_large",
            )
        blobs = await asyncio.gather(*(self.store.get(r.key, r.size_bytes + 1024) for _, r, _ in chosen))
        return [_image_part(media_id, r, d, data=blob) for (media_id, r, d), blob in zip(chosen, blobs, strict=True)]

    # generating

    async def generate(self, user_id: str, prompt: str, size: str, idempotency_key: str) -> MediaRecord:
        """A generated image, stored as the user's media; the same key gives the same media."""
        prompt = prompt.strip()
        if not prompt:
            raise InvalidRequest("the prompt is empty", code="empty_prompt")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest(f"the prompt is longer than {MAX_PROMPT_CHARS} characters", code="prompt_too_long")
        media_id = None
        if idempotency_key:
            media_id = "med_" + hashlib.sha256(f"{user_id}\x1f{idempotency_key}".encode()).hexdigest()[:24]
            try:
                return await self.get(user_id, media_id)
            except NotFound:
                pass
        picture = await self.generator.generate(prompt, size)
        try:
            return await self.ingest(
                user_id,
                picture.data,
                "",
                media_id=media_id,
                origin="generated",
                prompt=prompt,
                generator=self.generator.name,
                revised_prompt=picture.revised_prompt,
            )
        except InvalidRequest as err:
            # Our own generator's output did not pass: a fault on our side, not the client's.
            log.error("generated image refused", extra={"code": err.code, "reason": err.message})
            raise ParleyError("the generated image could not be processed") from None


def _image_part(
    media_id: str, rendition: RenditionRecord, detail: str, *, url: str = "", data: bytes = b""
) -> chat_pb2.ImagePart:
    return chat_pb2.ImagePart(
        media_id=media_id,
        url=url,
        data=data,
        mime_type=rendition.mime_type,
        detail=detail,
        width=rendition.width,
        height=rendition.height,
    )
