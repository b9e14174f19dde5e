"""The gRPC client of the history service, used by the gateway and the orchestrator.

Failed calls raise the typed ParleyError the server meant (NotFound, InvalidRequest, …);
idempotent calls are retried by gRPC itself when the service is briefly unavailable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.v1 import history_pb2, history_pb2_grpc
from parley_common.clients import grpc_calls as grpc_client

T = TypeVar("T")

_RETRY = {
    "maxAttempts": 5,
    "initialBackoff": "0.1s",
    "maxBackoff": "2s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
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
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": grpc_client.LOAD_BALANCING,
        "methodConfig": [
            {
                "name": [{"service": "parley.v1.HistoryService", "method": m} for m in _IDEMPOTENT],
                "retryPolicy": _RETRY,
            }
        ],
    }
)


class HistoryClient:
    def __init__(self, target: str, timeout_s: float = 5.0) -> None:
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.service_config", _SERVICE_CONFIG),
                ("grpc.enable_retries", 1),
                *grpc_client.CHANNEL_OPTIONS,
            ],
        )
        self.stub = history_pb2_grpc.HistoryServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        return await grpc_client.call("history", method, request, self.timeout_s)

    async def serving(self) -> bool:
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

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
    ) -> history_pb2.AppendMessageResponse:
        """`parent_id`: an edit's parent ("" for the first message); None = the current leaf."""
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
