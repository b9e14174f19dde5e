"""Media: direct uploads (streamed through to the media service), presigned uploads, and
fetching or deleting what was uploaded.

A direct upload is never held whole here: the body is read as it arrives and forwarded to the
media service over one client-streaming gRPC call, so the size limit (there, and BodyLimit
here) stops a large file at the byte it crosses the limit. Multipart bodies are parsed as a
stream too (python-multipart's push parser), keeping only the first file part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from parley_common.errors import InvalidRequest

from ..deps import RATE_LIMITED, CurrentUser, MediaDep
from ..schemas import CreateUpload, media_json, pending_upload_json

router = APIRouter(prefix="/v1/media", tags=["media"], dependencies=RATE_LIMITED)

MediaIdPath = Annotated[str, Path(min_length=1, max_length=64)]
# Multipart framing around the file (boundaries, part headers, small fields) on top of the file limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


@dataclass
class FilePart:
    filename: str = ""
    content_type: str = ""


class _MultipartFileReader:
    """Push parser state: the first part that carries a filename (or is named "file") is the
    file; its bytes are collected as they are parsed, every other part is skipped."""

    def __init__(self, boundary: bytes) -> None:
        self.file: FilePart | None = None
        self.reading_file = False
        self.file_ended = False
        self.headers: dict[str, str] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.out: list[bytes] = []
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self.headers = {}

    def _header_end(self) -> None:
        self.headers[self.header_field.decode("latin-1").lower()] = self.header_value.decode("utf-8", "replace")
        self.header_field.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        if self.file is not None:
            return
        _, params = parse_options_header(self.headers.get("content-disposition", ""))
        if b"filename" in params or params.get(b"name") == b"file":
            self.file = FilePart(
                filename=params.get(b"filename", b"").decode("utf-8", "replace")[:255],
                content_type=self.headers.get("content-type", ""),
            )
            self.reading_file = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.reading_file:
            self.out.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self.reading_file:
            self.reading_file, self.file_ended = False, True

    def feed(self, chunk: bytes) -> list[bytes]:
        try:
            self.parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"the multipart body is malformed: {exc}", code="invalid_multipart") from None
        out, self.out = self.out, []
        return out


async def multipart_file(body: AsyncIterator[bytes], content_type: str) -> tuple[FilePart, AsyncIterator[bytes]]:
    """The file part of a multipart/form-data body: its headers once they have arrived, then
    its bytes as they arrive."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart/form-data without a boundary", code="invalid_multipart")
    reader = _MultipartFileReader(boundary)
    source = body.__aiter__()
    early: list[bytes] = []
    while reader.file is None:
        try:
            chunk = await anext(source)
        except StopAsyncIteration:
            raise InvalidRequest("the multipart body has no file part", code="missing_file") from None
        early.extend(reader.feed(chunk))

    async def file_bytes() -> AsyncIterator[bytes]:
        for piece in early:
            yield piece
        async for chunk in source:
            for piece in reader.feed(chunk):
                yield piece
            if reader.file_ended:
                break
        if not reader.file_ended:
            raise InvalidRequest("the multipart body ended inside the file", code="truncated_upload")

    return reader.file, file_bytes()


@router.post("", status_code=201)
async def upload(
    request: Request, media: MediaDep, user: CurrentUser, filename: Annotated[str, Query(max_length=255)] = ""
) -> dict[str, Any]:
    """A file as `multipart/form-data` (field `file`), or as the raw body with its own
    Content-Type (`?filename=` optional). 201 with the processed media."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.lower().startswith("multipart/form-data"):
            part, chunks = await multipart_file(request.stream(), content_type)
            stored = await media.upload(user, part.content_type, part.filename, chunks)
        else:
            length = request.headers.get("content-length", "")
            declared = int(length) if length.isdigit() else 0
            stored = await media.upload(user, content_type, filename, request.stream(), declared)
    except ClientDisconnect:
        raise InvalidRequest("the upload was interrupted", code="upload_interrupted") from None
    return media_json(stored)


@router.post("/uploads", status_code=201)
async def create_upload(media: MediaDep, user: CurrentUser, body: CreateUpload) -> dict[str, Any]:
    """A presigned PUT URL to send the file straight to object storage, then `complete_url`."""
    pending = await media.create_upload(user, body.content_type, body.size_bytes, body.filename)
    return pending_upload_json(pending)


@router.post("/uploads/{media_id}/complete")
async def complete_upload(media: MediaDep, user: CurrentUser, media_id: MediaIdPath) -> dict[str, Any]:
    return media_json(await media.complete_upload(user, media_id))


@router.get("/{media_id}")
async def get_media(media: MediaDep, user: CurrentUser, media_id: MediaIdPath) -> dict[str, Any]:
    """The media with fresh presigned URLs (they expire after minutes: fetch again for new ones)."""
    return media_json(await media.get_media(user, media_id))


@router.delete("/{media_id}", status_code=204, response_class=Response)
async def delete_media(media: MediaDep, user: CurrentUser, media_id: MediaIdPath) -> Response:
    await media.delete_media(user, media_id)
    return Response(status_code=204)
