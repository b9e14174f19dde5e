"""Cancelling a response, wherever it is.

A cancel is two things: a flag in Redis, which work that has not started yet checks before
it starts (a request still in the orchestrator, a job still in a provider queue), and a
CancelResponse on the fanout exchange <ns>.control, which the worker streaming that
response acts on at once. Both are idempotent: cancelling twice changes nothing.
"""

from __future__ import annotations

from aio_pika.abc import AbstractExchange
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import envelope
from parley_common.messaging.topology import CANCEL_RESPONSE, SCHEMA_VERSION


class Cancellations:
    def __init__(self, redis: Redis, namespace: str, exchange: AbstractExchange | None, ttl_s: int = 3600) -> None:
        self.redis = redis
        self.namespace = namespace
        self.exchange = exchange
        self.ttl_s = ttl_s

    def key(self, response_id: str) -> str:
        return f"{self.namespace}:cancelled:{response_id}"

    async def request(self, response_id: str, user_id: str, reason: str) -> None:
        await self.redis.set(self.key(response_id), reason, ex=self.ttl_s)
        if self.exchange is None:
            raise RuntimeError("this Cancellations cannot publish (no control exchange)")
        command = chat_pb2.CancelResponse(
            version=SCHEMA_VERSION, response_id=response_id, user_id=user_id, reason=reason
        )
        await self.exchange.publish(
            envelope(command, message_type=CANCEL_RESPONSE, idempotency_key=f"cancel:{response_id}", persistent=False),
            routing_key="",
            # Heard by the workers running now, if any; the flag above covers the rest.
            mandatory=False,
        )

    async def requested(self, response_id: str) -> str | None:
        """The reason the response was cancelled, or None."""
        value = await self.redis.get(self.key(response_id))
        return value.decode() if isinstance(value, bytes) else value
