"""What is stored for one media, and where (the key layout).

    users/<user id>/media/<media id>/record.json      MediaRecord: kind, sizes, renditions
    users/<user id>/media/<media id>/<rendition>.<ext> high, low, thumb (+ frame-1..N of a video)
    uploads/<user id>/<media id>                       a presigned upload, until it is completed
    uploads/<user id>/<media id>.json                  PendingUploadRecord, until then too

Everything of a user is under one prefix, and a media id is only ever looked up under the
prefix of the user who asks: another user's id is simply not there (404). Originals are not
kept: only derivatives rebuilt from pixels, so no metadata (GPS) is stored. Object storage is
the only record; there is no database to keep in step with it.
"""

from __future__ import annotations

import re
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict

from parley_common.errors import InvalidRequest

USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
MEDIA_ID = re.compile(r"^med_[a-z0-9]{24}$")
_EXTENSIONS = {"image/webp": "webp", "image/jpeg": "jpg"}


def require_user_id(user_id: str) -> str:
    if not USER_ID.match(user_id) or ".." in user_id:
        raise InvalidRequest("user_id is not valid", code="invalid_user_id")
    return user_id


def require_media_id(media_id: str) -> str:
    if not MEDIA_ID.match(media_id):
        # Not a media id at all: for the client, the same as one that does not exist.
        raise InvalidRequest(f"{media_id[:64]!r} is not a media id", code="invalid_media_id")
    return media_id


def new_media_id() -> str:
    return "med_" + secrets.token_hex(12)


def media_prefix(user_id: str, media_id: str) -> str:
    return f"users/{user_id}/media/{media_id}/"


def record_key(user_id: str, media_id: str) -> str:
    return media_prefix(user_id, media_id) + "record.json"


def rendition_key(user_id: str, media_id: str, name: str, mime_type: str) -> str:
    return media_prefix(user_id, media_id) + f"{name}.{_EXTENSIONS[mime_type]}"


UPLOADS_PREFIX = "uploads/"


def upload_key(user_id: str, media_id: str) -> str:
    return f"{UPLOADS_PREFIX}{user_id}/{media_id}"


def pending_key(user_id: str, media_id: str) -> str:
    return f"{UPLOADS_PREFIX}{user_id}/{media_id}.json"


class RenditionRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str
    key: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    at_ms: int = 0


class MediaRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: int = 1
    id: str
    user_id: str
    kind: Literal["image", "video"]
    source_mime_type: str
    width: int
    height: int
    duration_ms: int = 0
    frame_count: int = 1
    source_size_bytes: int
    created_at_ms: int
    origin: Literal["upload", "generated"] = "upload"
    prompt: str = ""
    generator: str = ""
    revised_prompt: str = ""
    renditions: list[RenditionRecord]

    def rendition(self, name: str) -> RenditionRecord | None:
        return next((r for r in self.renditions if r.name == name), None)

    def frames(self) -> list[RenditionRecord]:
        return [r for r in self.renditions if r.name.startswith("frame-")]


class PendingUploadRecord(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    media_id: str
    user_id: str
    content_type: str
    filename: str = ""
    declared_size: int = 0
    created_at_ms: int
    expires_at_ms: int
