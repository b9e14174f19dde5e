"""Request and response bodies of the client API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from parley.v1 import chat_pb2, history_pb2, media_pb2

_CHANGE_TYPES = {
    history_pb2.CHANGE_KIND_CONVERSATION_CREATED: "conversation.created",
    history_pb2.CHANGE_KIND_CONVERSATION_RENAMED: "conversation.renamed",
    history_pb2.CHANGE_KIND_CONVERSATION_DELETED: "conversation.deleted",
    history_pb2.CHANGE_KIND_MESSAGE_ADDED: "message.added",
    history_pb2.CHANGE_KIND_MESSAGE_COMPLETED: "message.completed",
    history_pb2.CHANGE_KIND_CONVERSATION_UPDATED: "conversation.updated",
}
_STATUS = {
    history_pb2.MESSAGE_STATUS_COMPLETE: "complete",
    history_pb2.MESSAGE_STATUS_INTERRUPTED: "interrupted",
    history_pb2.MESSAGE_STATUS_FAILED: "failed",
}


def _unicode_text(value: str) -> str:
    """Text that UTF-8 (and so protobuf, Redis and every service) can carry: JSON may spell a
    lone surrogate ("\\ud800"), which no UTF-8 text has; refused here, before anything is done."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "invalid_unicode",
            "text must be valid Unicode: a lone surrogate at character {position}",
            {"position": exc.start},
        ) from None
    return value


# Every free text of a request body: what pydantic lets through as `str` may hold a lone
# surrogate (an unconstrained `str` field does; one with a length or pattern is refused as
# `string_unicode`), and that fails later, when it is encoded.
Text = Annotated[str, AfterValidator(_unicode_text)]


MAX_SEARCH_TEXT = 200


def _search_text(value: str) -> str:
    """The search text trimmed: 1..MAX_SEARCH_TEXT characters."""
    trimmed = value.strip()
    if not trimmed:
        raise PydanticCustomError("string_too_short", "the search text is empty once trimmed")
    if len(trimmed) > MAX_SEARCH_TEXT:
        raise PydanticCustomError(
            "string_too_long", "the search text is longer than {max} characters", {"max": MAX_SEARCH_TEXT}
        )
    return trimmed


# `q` of GET /v1/conversations/search, trimmed (errors: too_short, too_long, invalid_unicode).
SearchText = Annotated[str, AfterValidator(_unicode_text), AfterValidator(_search_text)]


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Text = Field(default="", max_length=200)


class RenameConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: Text = Field(max_length=200)


MAX_MEDIA_PER_MESSAGE = 8
MediaId = Annotated[str, Field(pattern=r"^med_[a-z0-9]{24}$")]
_MEDIA_KINDS = {media_pb2.MEDIA_KIND_IMAGE: "image", media_pb2.MEDIA_KIND_VIDEO: "video"}


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Length is checked against the configured limit in the route, for a clear 413.
    content: Text
    # The client's own id for the message: sending it again never makes a second message.
    client_message_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    model: Text | None = Field(default=None, max_length=64)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    # While an answer streams in this conversation: wait for it ("queue") or cancel it ("replace").
    on_busy: Literal["queue", "replace"] = "queue"
    # The user's own media (POST /v1/media) the model sees with this message.
    media_ids: list[MediaId] = Field(default_factory=list, max_length=MAX_MEDIA_PER_MESSAGE)
    image_detail: Literal["high", "low"] = "high"


ClientRequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
MessageId = Annotated[str, Field(min_length=1, max_length=128)]


class Regenerate(BaseModel):
    """POST /v1/conversations/{cid}/messages/{message_id}/regenerate: a new version of that answer."""

    model_config = ConfigDict(extra="forbid")
    # The same id again attaches to the same response instead of making another version.
    client_request_id: ClientRequestId | None = None
    model: Text | None = Field(default=None, max_length=64)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)


class EditMessage(BaseModel):
    """POST /v1/conversations/{cid}/messages/{message_id}/edit: a new version of that user
    message, and an answer to it."""

    model_config = ConfigDict(extra="forbid")
    content: Text
    media_ids: list[MediaId] = Field(default_factory=list, max_length=MAX_MEDIA_PER_MESSAGE)
    image_detail: Literal["high", "low"] = "high"
    client_request_id: ClientRequestId | None = None
    model: Text | None = Field(default=None, max_length=64)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)


class ContinueAnswer(BaseModel):
    """POST /v1/conversations/{cid}/messages/{message_id}/continue: that answer goes on."""

    model_config = ConfigDict(extra="forbid")
    client_request_id: ClientRequestId | None = None


class SetCurrent(BaseModel):
    """PUT /v1/conversations/{cid}/current: the version to show."""

    model_config = ConfigDict(extra="forbid")
    message_id: MessageId


def usage_json(u: chat_pb2.Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_micros": u.cost_micros}


def conversation_json(c: history_pb2.Conversation) -> dict[str, Any]:
    return {
        "id": c.id,
        "title": c.title,
        "created_at_ms": c.created_at_ms,
        "updated_at_ms": c.updated_at_ms,
        "current_message_id": c.current_message_id or None,
    }


def attachment_json(media_id: str, m: media_pb2.Media | None) -> dict[str, Any]:
    """A message's attachment with a fresh URL (its display rendition); nulls when the media
    is gone."""
    shown = None
    if m is not None:
        by_name = {r.name: r for r in m.renditions}
        shown = by_name.get("high") or by_name.get("poster") or (m.renditions[0] if m.renditions else None)
    return {
        "id": media_id,
        "url": shown.url if shown is not None else None,
        "content_type": shown.mime_type if shown is not None else None,
        "width": m.width if m is not None else None,
        "height": m.height if m is not None else None,
    }


def message_json(m: history_pb2.Message, media: dict[str, media_pb2.Media | None] | None = None) -> dict[str, Any]:
    """A message; `media`: its attachments, resolved (fresh URLs), by id."""
    siblings = list(m.sibling_ids) or [m.id]
    return {
        "parent_id": m.parent_id or None,
        "finish_reason": m.finish_reason or None,
        "media": [attachment_json(i, (media or {}).get(i)) for i in m.media_ids],
        "versions": {
            "index": siblings.index(m.id) + 1 if m.id in siblings else 1,
            "count": len(siblings),
            "ids": siblings,
        },
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "status": _STATUS.get(m.status, "unknown"),
        "model": m.model or None,
        "reply_to_id": m.reply_to_id or None,
        "usage": usage_json(m.usage) if m.role == "assistant" else None,
        "created_at_ms": m.created_at_ms,
    }


def search_hit_json(h: history_pb2.SearchHit) -> dict[str, Any]:
    """A conversation found by search; the matching message and a snippet of it, or nulls when
    the title matched."""
    return {
        "conversation": conversation_json(h.conversation),
        "message_id": h.message_id or None,
        "snippet": h.snippet or None,
    }


def page_json(items: list[dict[str, Any]], next_cursor: str) -> dict[str, Any]:
    return {"data": items, "next_cursor": next_cursor or None}


def change_json(c: history_pb2.Change, media: dict[str, media_pb2.Media | None] | None = None) -> dict[str, Any]:
    """One sync change: its type, when, and the conversation or message as it is now, with the
    conversation's current leaf."""
    body: dict[str, Any] = {
        "type": _CHANGE_TYPES.get(c.kind, "unknown"),
        "conversation_id": c.conversation_id,
        "changed_at_ms": c.changed_at_ms,
    }
    if c.kind != history_pb2.CHANGE_KIND_CONVERSATION_DELETED:
        body["current_message_id"] = c.current_message_id or None
    if c.HasField("conversation"):
        body["conversation"] = conversation_json(c.conversation)
    if c.HasField("message"):
        body["message"] = message_json(c.message, media)
    return body


def sync_json(page: history_pb2.SyncResponse, media: dict[str, media_pb2.Media | None] | None = None) -> dict[str, Any]:
    return {
        "data": [change_json(c, media) for c in page.changes],
        "next_cursor": page.next_cursor or None,
        "has_more": page.has_more,
    }


class CreateUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content_type: Text = Field(min_length=1, max_length=100)
    # What the client means to send; more than the limit is refused now rather than after the PUT.
    size_bytes: int = Field(default=0, ge=0, le=1_000_000_000_000)
    filename: Text = Field(default="", max_length=255)


class ImageGeneration(BaseModel):
    """OpenAI's image generation request. Other OpenAI parameters (quality, style, user, …) are
    accepted and ignored, as OpenAI-compatible servers do; `model` too: the configured generator
    draws every image."""

    model_config = ConfigDict(extra="ignore")
    prompt: Text = Field(min_length=1, max_length=4000)
    model: Text | None = Field(default=None, max_length=64)
    n: int = Field(default=1, ge=1, le=4)
    size: str = Field(default="1024x1024", pattern=r"^(\d{2,4}x\d{2,4}|auto)$")
    response_format: Literal["url", "b64_json"] = "url"


def media_json(m: media_pb2.Media) -> dict[str, Any]:
    """A media and its renditions, each with a presigned URL valid until `urls_expire_at_ms`."""
    body: dict[str, Any] = {
        "id": m.id,
        "object": "media",
        "kind": _MEDIA_KINDS.get(m.kind, "unknown"),
        "mime_type": m.source_mime_type,
        "width": m.width,
        "height": m.height,
        "size_bytes": m.source_size_bytes,
        "origin": m.origin,
        "created_at_ms": m.created_at_ms,
        "urls_expire_at_ms": m.urls_expire_at_ms,
        "renditions": {
            r.name: {
                "url": r.url,
                "mime_type": r.mime_type,
                "width": r.width,
                "height": r.height,
                "size_bytes": r.size_bytes,
                **({"at_ms": r.at_ms} if r.name.startswith("frame-") else {}),
            }
            for r in m.renditions
        },
    }
    if m.kind == media_pb2.MEDIA_KIND_VIDEO:
        body["duration_ms"] = m.duration_ms
    if m.frame_count > 1:
        body["frame_count"] = m.frame_count
    if m.origin == "generated":
        body["prompt"] = m.prompt
    return body


def pending_upload_json(p: media_pb2.PendingUpload) -> dict[str, Any]:
    return {
        "id": p.media_id,
        "object": "media.upload",
        "upload_url": p.url,
        "method": p.method,
        "headers": dict(p.headers),
        # A multipart/form-data POST to upload_url: these fields, then the file as `file`.
        "fields": dict(p.fields),
        "expires_at_ms": p.expires_at_ms,
        "max_bytes": p.max_bytes,
        "complete_url": f"/v1/media/uploads/{p.media_id}/complete",
    }
