"""Server-Sent Events encoding of stream frames.

A frame from the backend carries `id: <seq>`; events the gateway makes up itself (a timeout,
a shutdown notice) carry no id, so a client's Last-Event-ID always points into the replay log.

Every `data:` line is one line to every reader: SSE ends lines only at CR and LF (which JSON
escapes), but line-splitting readers (Python's str.splitlines, so httpx's aiter_lines) also end
them at U+2028, U+2029 and U+0085, which JSON may leave raw; `json_data` escapes those too.

Frames are lean, for slow networks: JSON without spaces, and a `delta` (most frames of an
answer) carries only its text: the response and conversation ids are in the response's
`X-Parley-Response-Id` header, the request's URL, and every other kind of frame.
"""

from __future__ import annotations

import json
from typing import Any

from parley.v1 import chat_pb2

from .schemas import usage_json

HEARTBEAT = b": keep-alive\n\n"
# Raw in JSON text they can only be inside strings, where their escapes mean the same.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


_LINE_BREAKER_CHARS = ("\u2028", "\u2029", "\x85")
_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_data(value: Any) -> str:
    """`value` as JSON for one `data:` line: UTF-8 text as it is, but for the characters some
    readers take for line ends."""
    text = _compact(value)
    if any(c in text for c in _LINE_BREAKER_CHARS):
        return text.translate(_LINE_BREAKERS)
    return text


def event_data(event: chat_pb2.StreamEvent) -> tuple[str, dict[str, Any]]:
    kind = event.WhichOneof("kind") or "unknown"
    if kind == "delta":
        return kind, {"text": event.delta.text}
    data: dict[str, Any] = {"response_id": event.response_id, "conversation_id": event.conversation_id}
    if kind == "meta":
        data.update(model=event.meta.model, user_message_id=event.meta.user_message_id)
        if event.meta.fallback_from:
            data.update(fallback_from=event.meta.fallback_from)
        # Older messages left out to fit the model's context window, and messages cut short to fit it.
        data.update(dropped_messages=event.meta.dropped_messages, truncated_messages=event.meta.truncated_messages)
        if event.meta.cached:
            data.update(cached=True)
    elif kind == "queued":
        data.update(position=event.queued.position, estimated_wait_ms=event.queued.estimated_wait_ms)
    elif kind == "usage":
        data.update(usage_json(event.usage))
    elif kind == "done":
        data.update(finish_reason=event.done.finish_reason)
    elif kind == "error":
        data.update(code=event.error.code, message=event.error.message, retryable=event.error.retryable)
    elif kind == "image":
        image = event.image
        data.update(
            media_id=image.media_id, url=image.url, mime_type=image.mime_type, width=image.width, height=image.height
        )
    return kind, data


def encode_event(event: chat_pb2.StreamEvent) -> bytes:
    if event.HasField("delta"):
        # The hot path: one frame per few tokens of every answer.
        return b'id: %d\nevent: delta\ndata: {"text":%b}\n\n' % (event.seq, json_data(event.delta.text).encode())
    kind, data = event_data(event)
    return f"id: {event.seq}\nevent: {kind}\ndata: {json_data(data)}\n\n".encode()


def encode_local_error(response_id: str, conversation_id: str, code: str, message: str, retryable: bool) -> bytes:
    data = {
        "response_id": response_id,
        "conversation_id": conversation_id,
        "code": code,
        "message": message,
        "retryable": retryable,
    }
    return f"event: error\ndata: {json_data(data)}\n\n".encode()
