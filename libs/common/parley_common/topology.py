"""Every exchange, queue and routing key name on the bus, and their declarations.

All names start with the namespace (PARLEY_NAMESPACE, default "parley").
"""

from __future__ import annotations

from dataclasses import dataclass

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

    # Declarations are idempotent; every service declares what it touches, so start order
    # does not matter.

    async def declare_requests_queue(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.requests_queue, durable=True)

    async def declare_fallbacks_queue(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.fallbacks_queue, durable=True)

    async def declare_provider_queue(self, channel: AbstractChannel, provider: str) -> AbstractQueue:
        return await channel.declare_queue(self.provider_queue(provider), durable=True)

    async def declare_events_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        return await channel.declare_exchange(self.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True)

    async def declare_dead_letter_queue(self, channel: AbstractChannel) -> AbstractQueue:
        return await channel.declare_queue(self.dead_letter_queue, durable=True)

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
        queue = await channel.declare_queue(self.history_completed_queue, durable=True)
        await queue.bind(exchange, RK_RESPONSE_COMPLETED)
        return queue

    async def declare_reply_queue(self, channel: AbstractChannel, gateway_id: str) -> AbstractQueue:
        """One reply queue per gateway process, gone with its connection.

        (Not one per request: a per-request queue costs a declare, a consume and a cancel per
        turn — about 3 ms of the first token — and a cancel interrupted by a client that hangs
        up closes the channel under every other stream.)
        """
        return await channel.declare_queue(self.reply_queue(gateway_id), exclusive=True, auto_delete=True)
