"""HistoryService over gRPC: input checks, then the store."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from google.protobuf.message import Message

from parley.v1 import history_pb2, history_pb2_grpc
from parley_common.context.prompt import FIRST_PAGE, MAX_CONTEXT_MESSAGES, ContextLimits, collect_context
from parley_common.errors import InvalidRequest, grpc_errors

from .search import hits_limit, search_query
from .store import HistoryStore

MAX_ID = 128
MAX_TITLE = 200
MAX_CONTENT = 200_000
MAX_CURSOR = 512
ROLES = frozenset({"user", "assistant", "system"})
MAX_MEDIA = 8
MAX_FINISH_REASON = 32
# Searches one replica runs at once; the others wait (within their caller's deadline). A
# search may read a thousand rows or more (search.py), so this bounds what searching, however
# many clients ask at once, costs the store.
SEARCHES_AT_ONCE = 4


def _require_id(name: str, value: str) -> None:
    if not value or len(value) > MAX_ID:
        raise InvalidRequest(f"{name} must be 1..{MAX_ID} characters")


def _require_ids(request: Message, *fields: str) -> None:
    """Each of `request`'s named fields is an id (as _require_id)."""
    for name in fields:
        _require_id(name, getattr(request, name))


def _require_cursor(name: str, value: str) -> None:
    if len(value) > MAX_CURSOR:
        raise InvalidRequest(f"{name} is longer than {MAX_CURSOR} characters", code="invalid_cursor")


def _require_title(title: str) -> None:
    if len(title) > MAX_TITLE:
        raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")


def _now_ms(value: int = 0) -> int:
    """`value` when the caller gave one, else now; never in the future (a caller whose clock
    runs ahead must not move a conversation's activity, or message order, past later writes)."""
    now = int(time.time() * 1000)
    return min(value, now) if value > 0 else now


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):  # type: ignore[misc]
    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self._searches = asyncio.Semaphore(SEARCHES_AT_ONCE)

    @grpc_errors
    async def CreateConversation(
        self,
        request: history_pb2.CreateConversationRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Conversation:
        _require_id("user_id", request.user_id)
        _require_title(request.title)
        return await self.store.create_conversation(request.user_id, "c_" + uuid.uuid4().hex, request.title, _now_ms())

    @grpc_errors
    async def GetConversation(
        self,
        request: history_pb2.GetConversationRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Conversation:
        _require_ids(request, "user_id", "conversation_id")
        return await self.store.get_conversation(request.user_id, request.conversation_id)

    @grpc_errors
    async def ListConversations(
        self,
        request: history_pb2.ListConversationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.ListConversationsResponse:
        _require_id("user_id", request.user_id)
        _require_cursor("cursor", request.cursor)
        page, cursor = await self.store.list_conversations(request.user_id, request.cursor, request.limit)
        return history_pb2.ListConversationsResponse(conversations=page, next_cursor=cursor)

    @grpc_errors
    async def AppendMessage(
        self,
        request: history_pb2.AppendMessageRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.AppendMessageResponse:
        _require_ids(request, "user_id", "conversation_id", "message_id")
        if request.role not in ROLES:
            raise InvalidRequest(f"role must be one of {sorted(ROLES)}")
        if len(request.content) > MAX_CONTENT:
            raise InvalidRequest(f"content is longer than {MAX_CONTENT} characters")
        if len(request.media_ids) > MAX_MEDIA:
            raise InvalidRequest(f"a message holds at most {MAX_MEDIA} media")
        for media_id in request.media_ids:
            _require_id("media_id", media_id)
        if request.has_parent_id and request.parent_id:
            _require_id("parent_id", request.parent_id)
        parent_id = request.parent_id if request.has_parent_id else None
        if request.after_stored_id:
            _require_id("after_stored_id", request.after_stored_id)
        now_ms = _now_ms(request.created_at_ms)
        if not (request.context_limit or request.context_token_budget):
            if request.after_stored_id:
                await self.store.require_stored(request.user_id, request.conversation_id, request.after_stored_id)
            message, created = await self.store.append_message(
                request.user_id,
                request.conversation_id,
                request.message_id,
                request.role,
                request.content,
                now_ms,
                parent_id=parent_id,
                media_ids=list(request.media_ids),
            )
            return history_pb2.AppendMessageResponse(message=message, created=created)
        # The orchestrator's context_limits, read with the reader every caller uses. Its first
        # read (the newest FIRST_PAGE messages, fewer under a smaller cap) is the store's with
        # the write: in one step where the store can.
        limits = ContextLimits(token_budget=request.context_token_budget, max_messages=request.context_limit)
        first = min(FIRST_PAGE, max(1, min(limits.max_messages or MAX_CONTEXT_MESSAGES, MAX_CONTEXT_MESSAGES)))
        message, created, page, cursor = await self.store.append_and_read(
            request.user_id,
            request.conversation_id,
            request.message_id,
            request.role,
            request.content,
            now_ms,
            first,
            parent_id=parent_id,
            media_ids=list(request.media_ids),
            after_stored=request.after_stored_id,
        )
        pages = [(page, cursor)]

        async def fetch(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
            # The current path, which now ends at the appended message.
            if pages and not before and limit == first:
                return pages.pop()
            pages.clear()
            return await self.store.get_messages(request.user_id, request.conversation_id, before, limit)

        latest = await collect_context(fetch, limits)
        return history_pb2.AppendMessageResponse(
            message=message, created=created, context=latest.newest_first, context_complete=latest.complete
        )

    @grpc_errors
    async def CompleteMessage(
        self,
        request: history_pb2.CompleteMessageRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Message:
        _require_ids(request, "user_id", "conversation_id", "message_id")
        if len(request.content) > MAX_CONTENT * 5:
            raise InvalidRequest("content too long")
        if len(request.finish_reason) > MAX_FINISH_REASON:
            raise InvalidRequest("finish_reason too long")
        return await self.store.complete_message(
            request.user_id,
            request.conversation_id,
            request.message_id,
            request.reply_to_id,
            request.content,
            request.status,
            request.model,
            request.usage,
            _now_ms(request.completed_at_ms),
            finish_reason=request.finish_reason,
        )

    @grpc_errors
    async def GetMessages(
        self,
        request: history_pb2.GetMessagesRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.GetMessagesResponse:
        _require_ids(request, "user_id", "conversation_id")
        _require_cursor("before", request.before)
        if request.leaf_id:
            _require_id("leaf_id", request.leaf_id)
        page, cursor = await self.store.get_messages(
            request.user_id, request.conversation_id, request.before, request.limit, leaf_id=request.leaf_id
        )
        return history_pb2.GetMessagesResponse(messages=page, next_cursor=cursor)

    @grpc_errors
    async def GetMessage(
        self,
        request: history_pb2.GetMessageRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Message:
        _require_ids(request, "user_id", "conversation_id", "message_id")
        return await self.store.get_message(request.user_id, request.conversation_id, request.message_id)

    @grpc_errors
    async def SetCurrentMessage(
        self,
        request: history_pb2.SetCurrentMessageRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Conversation:
        _require_ids(request, "user_id", "conversation_id", "message_id")
        return await self.store.set_current(
            request.user_id, request.conversation_id, request.message_id, request.exact, _now_ms()
        )

    @grpc_errors
    async def BeginContinuation(
        self,
        request: history_pb2.BeginContinuationRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.BeginContinuationResponse:
        _require_ids(request, "user_id", "conversation_id", "message_id", "response_id")
        message, base, applied = await self.store.begin_continuation(
            request.user_id, request.conversation_id, request.message_id, request.response_id
        )
        return history_pb2.BeginContinuationResponse(message=message, base_chars=base, applied=applied)

    @grpc_errors
    async def ConversationMedia(
        self,
        request: history_pb2.ConversationMediaRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.ConversationMediaResponse:
        _require_ids(request, "user_id", "conversation_id")
        media = await self.store.conversation_media(request.user_id, request.conversation_id)
        return history_pb2.ConversationMediaResponse(media_ids=media)

    @grpc_errors
    async def RenameConversation(
        self,
        request: history_pb2.RenameConversationRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.Conversation:
        _require_ids(request, "user_id", "conversation_id")
        _require_title(request.title)
        return await self.store.rename_conversation(request.user_id, request.conversation_id, request.title, _now_ms())

    @grpc_errors
    async def DeleteConversation(
        self,
        request: history_pb2.DeleteConversationRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.DeleteConversationResponse:
        _require_ids(request, "user_id", "conversation_id")
        await self.store.delete_conversation(request.user_id, request.conversation_id, _now_ms())
        return history_pb2.DeleteConversationResponse()

    @grpc_errors
    async def SearchConversations(
        self,
        request: history_pb2.SearchConversationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.SearchConversationsResponse:
        _require_id("user_id", request.user_id)
        query = search_query(request.query)
        async with self._searches:
            hits = await self.store.search_conversations(request.user_id, query, hits_limit(request.limit))
        return history_pb2.SearchConversationsResponse(hits=hits)

    @grpc_errors
    async def Sync(
        self,
        request: history_pb2.SyncRequest,
        context: grpc.aio.ServicerContext,
    ) -> history_pb2.SyncResponse:
        _require_id("user_id", request.user_id)
        _require_cursor("since", request.since)
        page = await self.store.sync(request.user_id, request.since, request.limit)
        return history_pb2.SyncResponse(changes=page.changes, next_cursor=page.next_cursor, has_more=page.has_more)
