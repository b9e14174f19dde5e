"""What a turn puts on the bus, whichever service does it: its job to a provider, its hand-on
to the next model of its fallback chain, and its end (`ResponseCompleted`, built here only).

The orchestrator's request and fallback consumers and the provider worker share one
`Dispatch` per process. Every publish is confirmed by the broker (the channel has publisher
confirms) and mandatory: a message that no queue takes raises, it is never dropped quietly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractExchange

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import envelope
from parley_common.messaging.replay import ReplayLog, ResponseStream
from parley_common.messaging.topology import (
    PROVIDER_JOB,
    RESPONSE_COMPLETED,
    RK_RESPONSE_COMPLETED,
    SCHEMA_VERSION,
    Topology,
)


@dataclass(frozen=True)
class Turn:
    """Who a response is for and where it goes: what ending a turn needs of its request or job."""

    response_id: str
    user_id: str
    conversation_id: str
    user_message_id: str
    reply_to: str

    @classmethod
    def of_request(cls, request: chat_pb2.ChatRequest) -> Turn:
        return cls(
            request.response_id, request.user_id, request.conversation_id, request.client_message_id, request.reply_to
        )

    @classmethod
    def of_job(cls, job: chat_pb2.ProviderJob) -> Turn:
        return cls(job.response_id, job.user_id, job.conversation_id, job.user_message_id, job.reply_to)


class Dispatch:
    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology,
        events: AbstractExchange,
        reply_channel: AbstractChannel,
        replay: ReplayLog,
    ) -> None:
        """Use `open()`. `channel` has publisher confirms on: the commands and events whose
        loss would lose a turn are confirmed. `reply_channel` has not: stream frames are not
        (the replay log is their durable copy)."""
        self.channel = channel
        self.topology = topology
        self.events = events
        self.reply_channel = reply_channel
        self.replay = replay
        self._declared: set[str] = set()

    @classmethod
    async def open(
        cls, channel: AbstractChannel, topology: Topology, reply_channel: AbstractChannel, replay: ReplayLog
    ) -> Dispatch:
        """Declares what a completion needs to reach its consumers even before they start (the
        history service stores it, the orchestrator settles its budgets)."""
        await topology.declare_dead_letter_queue(channel)
        await topology.declare_history_completed_queue(channel)
        await topology.declare_completions_queue(channel)
        events = await topology.declare_events_exchange(channel)
        return cls(channel, topology, events, reply_channel, replay)

    def stream(self, turn: Turn) -> ResponseStream:
        """The frames of `turn`'s response, to its client's reply queue and the replay log."""
        return ResponseStream(
            channel=self.reply_channel,
            replay=self.replay,
            response_id=turn.response_id,
            conversation_id=turn.conversation_id,
            reply_to=turn.reply_to,
        )

    async def _to_queue(self, job: chat_pb2.ProviderJob, queue: str, idempotency_key: str) -> None:
        if queue not in self._declared:
            await self.topology.declare_work_queue(self.channel, queue)
            self._declared.add(queue)
        await self.channel.default_exchange.publish(
            envelope(job, message_type=PROVIDER_JOB, idempotency_key=idempotency_key),
            routing_key=queue,
            mandatory=True,
        )

    async def send_job(self, job: chat_pb2.ProviderJob, idempotency_key: str) -> None:
        """`job` to its provider's queue."""
        await self._to_queue(job, self.topology.provider_queue(job.provider), idempotency_key)

    async def hand_to_fallback(self, job: chat_pb2.ProviderJob) -> None:
        """`job`, already set to its next model, to the orchestrator's fallback queue (which
        budgets and fits it like any first choice before it goes to its provider)."""
        await self._to_queue(job, self.topology.fallbacks_queue, f"{job.response_id}:{job.attempt}")

    async def completed(
        self,
        turn: Turn,
        model: str,
        content: str,
        status: chat_pb2.ResponseStatus.ValueType,
        finish_reason: str,
        usage: chat_pb2.Usage | None = None,
    ) -> None:
        """Announce the answer's final state: history stores it, the orchestrator reconciles
        the budgets and charges `usage` to the user."""
        completed = chat_pb2.ResponseCompleted(
            version=SCHEMA_VERSION,
            response_id=turn.response_id,
            user_id=turn.user_id,
            conversation_id=turn.conversation_id,
            user_message_id=turn.user_message_id,
            model=model,
            content=content,
            status=status,
            usage=usage if usage is not None else chat_pb2.Usage(),
            finish_reason=finish_reason,
            completed_at_ms=int(time.time() * 1000),
        )
        await self.announce(completed)

    async def announce(self, completed: chat_pb2.ResponseCompleted) -> None:
        """Publish `completed` on the events exchange, its response id as the idempotency key."""
        await self.events.publish(
            envelope(completed, message_type=RESPONSE_COMPLETED, idempotency_key=completed.response_id),
            routing_key=RK_RESPONSE_COMPLETED,
            mandatory=True,
        )

    async def end_cancelled(self, turn: Turn, stream: ResponseStream, model: str) -> None:
        """Cancelled before reaching a provider: an empty answer, stored as interrupted (as a
        worker stores one cancelled mid-stream)."""
        await stream.emit(meta=chat_pb2.StreamMeta(model=model, user_message_id=turn.user_message_id))
        await stream.emit(done=chat_pb2.StreamDone(finish_reason="cancelled"))
        await self.completed(turn, model, "", chat_pb2.RESPONSE_STATUS_INTERRUPTED, "cancelled")


__all__ = ["Dispatch", "Turn"]
