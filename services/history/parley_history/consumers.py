"""Persists assistant messages from ResponseCompleted events (at least once, idempotent)."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import trace

from parley.v1 import chat_pb2, history_pb2
from parley_common.amqp import PoisonMessage, open_envelope
from parley_common.errors import NotFound
from parley_common.lifecycle import InFlight
from parley_common.telemetry import extract_context, tracer
from parley_common.topology import RESPONSE_COMPLETED

from .store import HistoryStore

log = logging.getLogger(__name__)

STATUS = {
    chat_pb2.RESPONSE_STATUS_COMPLETED: history_pb2.MESSAGE_STATUS_COMPLETE,
    chat_pb2.RESPONSE_STATUS_INTERRUPTED: history_pb2.MESSAGE_STATUS_INTERRUPTED,
    chat_pb2.RESPONSE_STATUS_FAILED: history_pb2.MESSAGE_STATUS_FAILED,
}


class CompletionConsumer:
    def __init__(self, store: HistoryStore, in_flight: InFlight) -> None:
        self.store = store
        self.in_flight = in_flight

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with (
            self.in_flight,
            tracer(__name__).start_as_current_span(
                "history.persist_response",
                context=extract_context(message.headers),
                kind=trace.SpanKind.CONSUMER,
            ),
        ):
            try:
                event = open_envelope(message, chat_pb2.ResponseCompleted, RESPONSE_COMPLETED)
            except PoisonMessage as exc:
                log.error("rejecting poison message", extra={"reason": str(exc), "message_id": message.message_id})
                await message.reject(requeue=False)
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
            except Exception:
                log.exception("could not persist response, will retry", extra={"response_id": event.response_id})
                await message.nack(requeue=True)
                return
            await message.ack()
