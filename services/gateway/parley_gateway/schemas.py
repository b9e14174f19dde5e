"""Request and response bodies of the client API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.v1 import chat_pb2, history_pb2

_CHANGE_TYPES = {
    history_pb2.CHANGE_KIND_CONVERSATION_CREATED: "conversation.created",
    history_pb2.CHANGE_KIND_CONVERSATION_RENAMED: "conversation.renamed",
    history_pb2.CHANGE_KIND_CONVERSATION_DELETED: "conversation.deleted",
    history_pb2.CHANGE_KIND_MESSAGE_ADDED: "message.added",
    history_pb2.CHANGE_KIND_MESSAGE_COMPLETED: "message.completed",
}
_STATUS = {
    history_pb2.MESSAGE_STATUS_COMPLETE: "complete",
    history_pb2.MESSAGE_STATUS_INTERRUPTED: "interrupted",
    history_pb2.MESSAGE_STATUS_FAILED: "failed",
}


class CreateConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="", max_length=200)


class RenameConversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=200)


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Length is checked against the configured limit in the route, for a clear 413.
    content: str
    # The client's own id for the message: sending it again never makes a second message.
    client_message_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    model: str | None = Field(default=None, max_length=64)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    # While an answer streams in this conversation: wait for it ("queue") or cancel it ("replace").
    on_busy: Literal["queue", "replace"] = "queue"


def usage_json(u: chat_pb2.Usage) -> dict[str, int]:
    return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cost_micros": u.cost_micros}


def conversation_json(c: history_pb2.Conversation) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "created_at_ms": c.created_at_ms, "updated_at_ms": c.updated_at_ms}


def message_json(m: history_pb2.Message) -> dict[str, Any]:
    return {
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


def page_json(items: list[dict[str, Any]], next_cursor: str) -> dict[str, Any]:
    return {"data": items, "next_cursor": next_cursor or None}


def change_json(c: history_pb2.Change) -> dict[str, Any]:
    """One sync change: its type, when, and the conversation or message as it is now."""
    body: dict[str, Any] = {
        "type": _CHANGE_TYPES.get(c.kind, "unknown"),
        "conversation_id": c.conversation_id,
        "changed_at_ms": c.changed_at_ms,
    }
    if c.HasField("conversation"):
        body["conversation"] = conversation_json(c.conversation)
    if c.HasField("message"):
        body["message"] = message_json(c.message)
    return body


def sync_json(page: history_pb2.SyncResponse) -> dict[str, Any]:
    return {
        "data": [change_json(c) for c in page.changes],
        "next_cursor": page.next_cursor or None,
        "has_more": page.has_more,
    }
