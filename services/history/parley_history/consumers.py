"""Persists assistant messages from ResponseCompleted events (at least once, idempotent)."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import NotFound, Unavailable
from parley_common.messaging.bus import Retry

from .store import HistoryStore

log = logging.getLogger(__name__)

STATUS = {
    chat_pb2.RESPONSE_STATUS_COMPLETED: history_pb2.MESSAGE_STATUS_COMPLETE,
    chat_pb2.RESPONSE_STATUS_INTERRUPTED: history_pb2.MESSAGE_STATUS_INTERRUPTED,
    chat_pb2.RESPONSE_STATUS_FAILED: history_pb2.MESSAGE_STATUS_FAILED,
}


# What a message keeps of why its answer ended (the client offers to continue after "length").
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "other", "cancelled"})


class AnswerRecorder:
    def __init__(self, store: HistoryStore) -> None:
        """The handler of history's completions queue (bus.Subscriber does the rest: a
        completion that cannot be stored is tried again a few times, then dead-lettered)."""
        self.store = store

    async def __call__(self, event: chat_pb2.ResponseCompleted, message: AbstractIncomingMessage) -> None:
        if not event.conversation_id:
            return  # a stateless answer (OpenAI-compatible API): nothing to store
        try:
            await self.store.complete_message(
                event.user_id,
                event.conversation_id,
                event.response_id,
                event.user_message_id,
                event.content,
                STATUS.get(event.status, history_pb2.MESSAGE_STATUS_FAILED),
                event.model,
                event.usage,
                event.completed_at_ms,
                finish_reason=event.finish_reason if event.finish_reason in FINISH_REASONS else "",
            )
        except NotFound:
            # The conversation was deleted while the answer streamed: nothing to keep.
            log.info("conversation gone, dropping response", extra={"response_id": event.response_id})
        except Unavailable as exc:
            # Not the event's fault (Cassandra down or unreachable): it waits for the store,
            # however long that lasts, and is never dead-lettered for it.
            raise Retry(f"history store unavailable: {exc}", counted=False) from None
