"""Server-Sent Events encoding of stream frames.

A frame from the backend carries `id: <seq>`; events the gateway makes up itself (a timeout,
a shutdown notice) carry no id, so a client's Last-Event-ID always points into the replay log.

Every `data:` line is one line to every reader: SSE ends lines only at CR and LF (which JSON
escapes), but line-splitting readers (Python's str.splitlines, so httpx's aiter_lines) also end
them at U+2028, U+2029 and U+0085, which JSON may leave raw; `json_data` escapes those too.
"""

from __future__ import annotations

import json
from typing import Any

from parley.v1 import chat_pb2

from .schemas import usage_json

HEARTBEAT = b": keep-alive\n\n"
# Raw in JSON text they can only be inside strings, where their escapes mean the same.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def json_data(value: Any) -> str:
    """`value` as JSON for one `data:` line: UTF-8 text as it is, but for the characters some
    readers take for line ends."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKERS)


def event_data(event: chat_pb2.StreamEvent) -> tuple[str, dict[str, Any]]:
    kind = event.WhichOneof("kind") or "unknown"
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
    elif kind == "delta":
        data.update(text=event.delta.text)
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
