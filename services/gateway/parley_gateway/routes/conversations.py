"""Conversations and their messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import StreamingResponse

from ..attachments import delete_all, resolve
from ..deps import RATE_LIMITED, CurrentUser, HistoryDep, MediaDep, OwnedDep, TurnsDep
from ..schemas import (
    CreateConversation,
    RenameConversation,
    SearchText,
    SendMessage,
    conversation_json,
    message_json,
    page_json,
    search_hit_json,
)
from ..sse_response import sse_response

router = APIRouter(prefix="/v1/conversations", tags=["conversations"], dependencies=RATE_LIMITED)

ConversationId = Annotated[str, Path(min_length=1, max_length=128)]
Cursor = Annotated[str, Query(max_length=256)]
Limit = Annotated[int, Query(ge=1, le=200)]


@router.post("", status_code=201)
async def create_conversation(history: HistoryDep, user: CurrentUser, body: CreateConversation) -> dict[str, Any]:
    conversation = await history.create_conversation(user, body.title)
    return conversation_json(conversation)


@router.get("")
async def list_conversations(
    history: HistoryDep, user: CurrentUser, cursor: Cursor = "", limit: Limit = 20
) -> dict[str, Any]:
    page = await history.list_conversations(user, cursor, limit)
    return page_json([conversation_json(c) for c in page.conversations], page.next_cursor)


# Declared before the /{conversation_id} routes, which would take "search" for an id.
@router.get("/search")
async def search_conversations(
    history: HistoryDep,
    user: CurrentUser,
    q: Annotated[SearchText, Query(max_length=1000, description="1-200 characters once trimmed")],
    limit: Annotated[int, Query(ge=1, le=50)] = 20,
) -> dict[str, Any]:
    """The user's conversations whose title or a message's text holds `q` (case-insensitive),
    latest activity first, each once, with the newest matching message and a snippet of it."""
    found = await history.search_conversations(user, q, limit)
    return {"data": [search_hit_json(h) for h in found.hits]}


@router.get("/{conversation_id}")
async def get_conversation(history: HistoryDep, user: CurrentUser, conversation_id: ConversationId) -> dict[str, Any]:
    return conversation_json(await history.get_conversation(user, conversation_id))


@router.patch("/{conversation_id}")
async def rename_conversation(
    history: HistoryDep, user: CurrentUser, conversation_id: ConversationId, body: RenameConversation
) -> dict[str, Any]:
    renamed = await history.rename_conversation(user, conversation_id, body.title)
    return conversation_json(renamed)


@router.delete("/{conversation_id}", status_code=204, response_class=Response)
async def delete_conversation(
    history: HistoryDep, media: MediaDep, owned: OwnedDep, user: CurrentUser, conversation_id: ConversationId
) -> Response:
    owned.forget(user, conversation_id)
    # Its media first (every version's): if this stops half-way, the conversation is still
    # there and a retried DELETE finishes the job.
    media_ids = await history.conversation_media(user, conversation_id)
    await delete_all(media, user, media_ids)
    await history.delete_conversation(user, conversation_id)
    return Response(status_code=204)


@router.get("/{conversation_id}/messages")
async def list_messages(
    history: HistoryDep,
    media: MediaDep,
    user: CurrentUser,
    conversation_id: ConversationId,
    before: Cursor = "",
    limit: Limit = 50,
) -> dict[str, Any]:
    """The conversation's current path, newest first: each message with its versions (ids of
    the message and its siblings, and its place among them) and its media with fresh URLs."""
    page = await history.get_messages(user, conversation_id, before, limit)
    resolved = await resolve(media, user, (i for m in page.messages for i in m.media_ids))
    return page_json([message_json(m, resolved) for m in page.messages], page.next_cursor)


@router.post(
    "/{conversation_id}/messages",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the answer as Server-Sent Events"}},
)
async def send_message(
    turns: TurnsDep, user: CurrentUser, conversation_id: ConversationId, body: SendMessage
) -> StreamingResponse:
    """Send a message; the answer streams back as Server-Sent Events (turns/start.py)."""
    return sse_response(await turns.start(user, conversation_id, body))
