"""The gRPC client of the history service, used by the gateway and the orchestrator.

Failed calls raise the typed ParleyError the server meant (NotFound, InvalidRequest, …);
idempotent calls are retried by gRPC itself when the service is briefly unavailable.
"""

from __future__ import annotations

from parley.v1 import history_pb2, history_pb2_grpc
from parley_common.clients.grpc_calls import ServiceClient, retrying_config

# CreateConversation is left out: a retry after a lost reply would create a second one.
# DeleteConversation is in: a retry after a lost reply finds it gone (NOT_FOUND), which is
# the outcome that was asked for.
_IDEMPOTENT = [
    "GetConversation",
    "ListConversations",
    "AppendMessage",
    "CompleteMessage",
    "GetMessages",
    "RenameConversation",
    "DeleteConversation",
    "Sync",
    "SearchConversations",
    "GetMessage",
    "SetCurrentMessage",
    "BeginContinuation",
    "ConversationMedia",
]
_SERVICE_CONFIG = retrying_config("parley.v1.HistoryService", _IDEMPOTENT, max_attempts=5, max_backoff_s=2)


class HistoryClient(ServiceClient):
    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        super().__init__("history", target, _SERVICE_CONFIG, timeout_s)
        self.stub = history_pb2_grpc.HistoryServiceStub(self.channel)

    async def create_conversation(self, user_id: str, title: str) -> history_pb2.Conversation:
        return await self._call(
            self.stub.CreateConversation, history_pb2.CreateConversationRequest(user_id=user_id, title=title)
        )

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        return await self._call(
            self.stub.GetConversation,
            history_pb2.GetConversationRequest(user_id=user_id, conversation_id=conversation_id),
        )

    async def list_conversations(
        self, user_id: str, cursor: str = "", limit: int = 0
    ) -> history_pb2.ListConversationsResponse:
        return await self._call(
            self.stub.ListConversations,
            history_pb2.ListConversationsRequest(user_id=user_id, cursor=cursor, limit=limit),
        )

    async def append_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        role: str,
        content: str,
        created_at_ms: int,
        context_limit: int = 0,
        context_token_budget: int = 0,
        *,
        parent_id: str | None = None,
        media_ids: list[str] | None = None,
        after_stored_id: str = "",
    ) -> history_pb2.AppendMessageResponse:
        """`parent_id`: an edit's parent ("" for the first message); None = the current leaf.
        `after_stored_id`: append only once that answer is stored, else NotFound
        answer_not_stored and nothing is written."""
        return await self._call(
            self.stub.AppendMessage,
            history_pb2.AppendMessageRequest(
                user_id=user_id,
                conversation_id=conversation_id,
                message_id=message_id,
                role=role,
                content=content,
                created_at_ms=created_at_ms,
                context_limit=context_limit,
                context_token_budget=context_token_budget,
                parent_id=parent_id or "",
                has_parent_id=parent_id is not None,
                media_ids=media_ids or [],
                after_stored_id=after_stored_id,
            ),
        )

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str = "", limit: int = 0, leaf_id: str = ""
    ) -> history_pb2.GetMessagesResponse:
        """The current path (or the one ending at `leaf_id`), newest first."""
        return await self._call(
            self.stub.GetMessages,
            history_pb2.GetMessagesRequest(
                user_id=user_id, conversation_id=conversation_id, before=before, limit=limit, leaf_id=leaf_id
            ),
        )

    async def get_message(self, user_id: str, conversation_id: str, message_id: str) -> history_pb2.Message:
        return await self._call(
            self.stub.GetMessage,
            history_pb2.GetMessageRequest(user_id=user_id, conversation_id=conversation_id, message_id=message_id),
        )

    async def set_current(
        self, user_id: str, conversation_id: str, message_id: str, exact: bool = False
    ) -> history_pb2.Conversation:
        return await self._call(
            self.stub.SetCurrentMessage,
            history_pb2.SetCurrentMessageRequest(
                user_id=user_id, conversation_id=conversation_id, message_id=message_id, exact=exact
            ),
        )

    async def begin_continuation(
        self, user_id: str, conversation_id: str, message_id: str, response_id: str
    ) -> history_pb2.BeginContinuationResponse:
        return await self._call(
            self.stub.BeginContinuation,
            history_pb2.BeginContinuationRequest(
                user_id=user_id, conversation_id=conversation_id, message_id=message_id, response_id=response_id
            ),
        )

    async def conversation_media(self, user_id: str, conversation_id: str) -> list[str]:
        reply = await self._call(
            self.stub.ConversationMedia,
            history_pb2.ConversationMediaRequest(user_id=user_id, conversation_id=conversation_id),
        )
        return list(reply.media_ids)

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> history_pb2.Conversation:
        return await self._call(
            self.stub.RenameConversation,
            history_pb2.RenameConversationRequest(user_id=user_id, conversation_id=conversation_id, title=title),
        )

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        await self._call(
            self.stub.DeleteConversation,
            history_pb2.DeleteConversationRequest(user_id=user_id, conversation_id=conversation_id),
        )

    async def sync(self, user_id: str, since: str = "", limit: int = 0) -> history_pb2.SyncResponse:
        """Every change of the user's data after `since` ('' = from the beginning), oldest first."""
        return await self._call(self.stub.Sync, history_pb2.SyncRequest(user_id=user_id, since=since, limit=limit))

    async def search_conversations(
        self, user_id: str, query: str, limit: int = 0
    ) -> history_pb2.SearchConversationsResponse:
        """The user's conversations whose title or a message holds `query` (case-insensitive),
        latest activity first; `limit` 0 = 20, at most 50."""
        return await self._call(
            self.stub.SearchConversations,
            history_pb2.SearchConversationsRequest(user_id=user_id, query=query, limit=limit),
        )


__all__ = ["HistoryClient"]
