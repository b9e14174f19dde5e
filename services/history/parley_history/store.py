"""The history store interface every backend implements (and the contract tests exercise)."""

from __future__ import annotations

import base64
from typing import Protocol

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest

MAX_PAGE = 200


class HistoryStore(Protocol):
    async def create_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation: ...

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        """The conversation, or NotFound when it does not exist or is another user's."""
        ...

    async def list_conversations(
        self, user_id: str, cursor: str, limit: int
    ) -> tuple[list[history_pb2.Conversation], str]:
        """Latest activity first; returns the page and the next cursor ('' at the end)."""
        ...

    async def append_message(
        self, user_id: str, conversation_id: str, message_id: str, role: str, content: str, now_ms: int
    ) -> tuple[history_pb2.Message, bool]:
        """Store a message once: a repeat with the same id returns the stored one and False."""
        ...

    async def complete_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        reply_to_id: str,
        content: str,
        status: history_pb2.MessageStatus.ValueType,
        model: str,
        usage: chat_pb2.Usage,
        now_ms: int,
    ) -> history_pb2.Message:
        """Store an assistant message's final state; a repeat leaves the first one as it is."""
        ...

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int
    ) -> tuple[list[history_pb2.Message], str]:
        """Newest first, older than the cursor `before` ('' = newest)."""
        ...

    async def close(self) -> None: ...


def encode_cursor(*parts: str | int) -> str:
    raw = "\x1f".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("malformed cursor", code="invalid_cursor") from None
    parts = raw.split("\x1f")
    if len(parts) != arity:
        raise InvalidRequest("malformed cursor", code="invalid_cursor")
    return parts


def cursor_int(value: str) -> int:
    if not value.isdigit():
        raise InvalidRequest("malformed cursor", code="invalid_cursor")
    return int(value)


def clamp_limit(limit: int, default: int = 50) -> int:
    if limit <= 0:
        return default
    return min(limit, MAX_PAGE)
