"""Every exchange, queue and routing key name on the bus, and their declarations.

All names start with the namespace (PARLEY_NAMESPACE, default "parley").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# Message types (the AMQP `type` property) and the schema version consumers accept.
CHAT_REQUEST = "parley.v1.ChatRequest"
PROVIDER_JOB = "parley.v1.ProviderJob"
STREAM_EVENT = "parley.v1.StreamEvent"
RESPONSE_COMPLETED = "parley.v1.ResponseCompleted"
CANCEL_RESPONSE = "parley.v1.CancelResponse"
SCHEMA_VERSION = 1

RK_RESPONSE_COMPLETED = "response.completed"

QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
# How often a message may come back unacknowledged (its consumer died or handed it back) before
# the broker dead-letters it: it is delivered at most DELIVERY_LIMIT + 1 times.
DELIVERY_LIMIT = 5
# How long a message a handler hands back waits before it is tried again.
RETRY_DELAY_S = 1.0


@dataclass(frozen=True)
class Topology:
    namespace: str

    @property
    def requests_queue(self) -> str:
        return f"{self.namespace}.orchestrator.requests"

    @property
    def fallbacks_queue(self) -> str:
        """Provider jobs a worker hands on along their fallback chain, for the orchestrator to
        budget and fit to the next model before they go to its provider."""
        return f"{self.namespace}.orchestrator.fallbacks"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def control_exchange(self) -> str:
        return f"{self.namespace}.control"

    @property
    def history_completed_queue(self) -> str:
        return f"{self.namespace}.history.response-completed"

    def provider_queue(self, provider: str) -> str:
        return f"{self.namespace}.provider.{provider}"

    def reply_queue(self, gateway_id: str) -> str:
        return f"{self.namespace}.reply.{gateway_id}"

    @property
    def completions_queue(self) -> str:
        """The orchestrator's own queue of completions (budgets, usage, cache)."""
        return f"{self.namespace}.orchestrator.response-completed"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dead-letter"

    @staticmethod
    def retry_queue(queue: str) -> str:
        """Where a message of `queue` waits RETRY_DELAY_S before going back to it."""
        return f"{queue}.retry"

    def durable_queues(self, providers: list[str]) -> list[str]:
        """Every durable queue of the namespace (the waiting rooms included), for a test stack
        or an operator removing a namespace: quorum queues live until deleted."""
        work = [
            self.requests_queue,
            self.fallbacks_queue,
            self.completions_queue,
            self.history_completed_queue,
            *(self.provider_queue(p) for p in providers),
        ]
        return [*work, *(self.retry_queue(q) for q in work), self.dead_letter_queue]

    # Declarations are idempotent; every service declares what it touches, so start order
    # does not matter. Every durable queue is a quorum queue (replicated over the cluster's
    # nodes); a queue's arguments are constants here, never settings, because every service
    # declares the same queues and the broker refuses a declaration whose arguments differ.

    def work_queue_arguments(self) -> dict[str, Any]:
        """A durable queue of commands or events: replicated, and a message that has come back
        unacknowledged DELIVERY_LIMIT times (its handling kills the consumer) goes to the dead
        letters, with the reason (`x-death`), instead of coming back for ever."""
        return {
            **QUORUM,
            "x-delivery-limit": DELIVERY_LIMIT,
            "x-dead-letter-exchange": self.dead_letter_exchange,
            # Dead-lettered once the dead-letter queue has it (else kept), which needs the
            # queue to refuse publishes rather than drop its oldest messages when full.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare_work_queue(self, channel: AbstractChannel, name: str) -> AbstractQueue:
        return await channel.declare_queue(name, durable=True, arguments=self.work_queue_arguments())

    async def declare_retry_queue(self, channel: AbstractChannel, queue: str) -> AbstractQueue:
        """The waiting room of `queue`: a message published here goes back to `queue` after
        RETRY_DELAY_S (its TTL expires and the broker dead-letters it there). A handler that
        must try again later holds no prefetch slot and sleeps nowhere meanwhile."""
        return await channel.declare_queue(
            self.retry_queue(queue),
            durable=True,
            arguments={
                **QUORUM,
                "x-message-ttl": int(RETRY_DELAY_S * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )

    async def declare_requests_queue(self, channel: AbstractChannel) -> AbstractQueue:
        return await self.declare_work_queue(channel, self.requests_queue)

    async def declare_fallbacks_queue(self, channel: AbstractChannel) -> AbstractQueue:
        return await self.declare_work_queue(channel, self.fallbacks_queue)

    async def declare_provider_queue(self, channel: AbstractChannel, provider: str) -> AbstractQueue:
        return await self.declare_work_queue(channel, self.provider_queue(provider))

    async def declare_completions_queue(self, channel: AbstractChannel) -> AbstractQueue:
        exchange = await self.declare_events_exchange(channel)
        queue = await self.declare_work_queue(channel, self.completions_queue)
        await queue.bind(exchange, RK_RESPONSE_COMPLETED)
        return queue

    async def declare_events_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        return await channel.declare_exchange(self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)

    async def declare_dead_letter_queue(self, channel: AbstractChannel) -> AbstractQueue:
        """Every message no consumer can handle, from every queue, kept for an operator: the
        broker's own (`x-death` says why: `delivery_limit`, `rejected`) and those a consumer
        buried (`x-parley-dead-reason` says why)."""
        exchange = await channel.declare_exchange(self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
        queue = await channel.declare_queue(self.dead_letter_queue, durable=True, arguments=QUORUM)
        await queue.bind(exchange)
        return queue

    async def declare_control_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        return await channel.declare_exchange(self.control_exchange, aio_pika.ExchangeType.FANOUT, durable=True)

    async def declare_control_queue(self, channel: AbstractChannel) -> AbstractQueue:
        """A private queue of one worker process that hears every control message."""
        exchange = await self.declare_control_exchange(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        return queue

    async def declare_history_completed_queue(self, channel: AbstractChannel) -> AbstractQueue:
        exchange = await self.declare_events_exchange(channel)
        queue = await self.declare_work_queue(channel, self.history_completed_queue)
        await queue.bind(exchange, RK_RESPONSE_COMPLETED)
        return queue

    async def declare_reply_queue(self, channel: AbstractChannel, gateway_id: str) -> AbstractQueue:
        """One reply queue per gateway process, gone with its connection.

        (Not one per request: a per-request queue costs a declare, a consume and a cancel per
        turn — about 3 ms of the first token — and a cancel interrupted by a client that hangs
        up closes the channel under every other stream.)
        """
        return await channel.declare_queue(self.reply_queue(gateway_id), exclusive=True, auto_delete=True)
