"""Persists assistant messages from ResponseCompleted events (at least once, idempotent)."""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2, history_pb2
from parley_common.amqp import PoisonMessage, open_envelope
from parley_common.dead_letters import DeadLetters
from parley_common.errors import NotFound, Unavailable
from parley_common.lifecycle import InFlight
from parley_common.telemetry import consumer_span
from parley_common.topology import RESPONSE_COMPLETED

from .store import HistoryStore

log = logging.getLogger(__name__)

# A completion that cannot be stored is retried this often, this far apart, then dead-lettered.
MAX_ATTEMPTS = 20
RETRY_DELAY_S = 1.0
# While the store itself is unavailable (Cassandra down or unreachable), a completion is handed
# back to the queue after this pause, however long that lasts: it is not the event's fault.
STORE_DOWN_PAUSE_S = 1.0

STATUS = {
    chat_pb2.RESPONSE_STATUS_COMPLETED: history_pb2.MESSAGE_STATUS_COMPLETE,
    chat_pb2.RESPONSE_STATUS_INTERRUPTED: history_pb2.MESSAGE_STATUS_INTERRUPTED,
    chat_pb2.RESPONSE_STATUS_FAILED: history_pb2.MESSAGE_STATUS_FAILED,
}


class CompletionConsumer:
    def __init__(self, store: HistoryStore, in_flight: InFlight, dead_letters: DeadLetters, queue: str) -> None:
        self.store = store
        self.in_flight = in_flight
        self.dead_letters = dead_letters
        self.queue = queue

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with (
            self.in_flight,
            consumer_span(__name__, "history.persist_response", message.headers),
        ):
            try:
                event = open_envelope(message, chat_pb2.ResponseCompleted, RESPONSE_COMPLETED)
            except PoisonMessage as exc:
                await self.dead_letters.bury(message, self.queue, str(exc))
                return
            if not event.conversation_id:
                await message.ack()  # a stateless answer (OpenAI-compatible API): nothing to store
                return
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
                )
            except NotFound:
                # The conversation was deleted while the answer streamed: nothing to keep.
                log.info("conversation gone, dropping response", extra={"response_id": event.response_id})
            except Unavailable as exc:
                log.warning(
                    "history store unavailable; the response waits on its queue",
                    extra={"response_id": event.response_id, "reason": str(exc)},
                )
                await asyncio.sleep(STORE_DOWN_PAUSE_S)
                await message.nack(requeue=True)
                return
            except Exception as exc:
                log.exception("could not persist response, will retry", extra={"response_id": event.response_id})
                # Back to the end of the queue after a pause; after MAX_ATTEMPTS, to the dead letters.
                await self.dead_letters.retry_later(
                    message, self.queue, f"{type(exc).__name__}: {exc}", MAX_ATTEMPTS, RETRY_DELAY_S
                )
                return
            await message.ack()
