"""Messages that cannot be handled go to a dead-letter queue, with the reason; transient
failures are retried a bounded number of times. Nothing loops forever.

Both work by republishing (with publisher confirms) and then acking the original, so they
need no queue arguments: existing queues keep their declarations, and the reason travels in
the message's headers (`x-parley-dead-reason`, `x-parley-source-queue`, `x-parley-attempts`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .topology import Topology

log = logging.getLogger(__name__)

ATTEMPTS_HEADER = "x-parley-attempts"


class DeadLetters:
    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        """`channel` must have publisher confirms on: a message is acked only once its copy is safe."""
        self.channel = channel
        self.topology = topology
        self._declared = False

    async def _declare(self) -> None:
        if not self._declared:
            await self.topology.declare_dead_letter_queue(self.channel)
            self._declared = True

    @staticmethod
    def attempts(message: AbstractIncomingMessage) -> int:
        value = (message.headers or {}).get(ATTEMPTS_HEADER, 0)
        return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0

    def _copy(self, message: AbstractIncomingMessage, **headers: object) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            headers={**(message.headers or {}), **headers},  # type: ignore[dict-item]
            content_type=message.content_type,
            type=message.type,
            message_id=message.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            timestamp=time.time(),
        )

    async def bury(self, message: AbstractIncomingMessage, source_queue: str, reason: str) -> None:
        """Move the message to the dead-letter queue with `reason`, then ack it."""
        await self._declare()
        copy = self._copy(message, **{"x-parley-dead-reason": reason[:500], "x-parley-source-queue": source_queue})
        await self.channel.default_exchange.publish(copy, routing_key=self.topology.dead_letter_queue)
        await message.ack()
        log.error("dead-lettered a message", extra={"queue": source_queue, "reason": reason, "id": message.message_id})

    async def retry_later(
        self, message: AbstractIncomingMessage, source_queue: str, reason: str, max_attempts: int, delay_s: float
    ) -> None:
        """Put the message back at the end of its queue after `delay_s`, or bury it once it has
        failed `max_attempts` times."""
        attempts = self.attempts(message) + 1
        if attempts >= max_attempts:
            await self.bury(message, source_queue, f"failed {attempts} times; last: {reason}")
            return
        await asyncio.sleep(delay_s)
        await self.channel.default_exchange.publish(
            self._copy(message, **{ATTEMPTS_HEADER: attempts}), routing_key=source_queue
        )
        await message.ack()


class Deliveries:
    """How many times a message was delivered without being acknowledged, counted in Redis
    (classic queues keep no count): a message whose handling kills its consumer (a crash, an
    out-of-memory kill) comes back after every restart, and would forever; after
    `max_deliveries` it goes to the dead-letter queue instead. A first delivery costs nothing:
    only redelivered messages are counted. If Redis cannot be reached the message is handled
    (the count is a guard, not a gate)."""

    def __init__(self, redis: Redis, namespace: str, max_deliveries: int = 5, ttl_s: int = 86_400) -> None:
        self.redis = redis
        self.namespace = namespace
        self.max_deliveries = max_deliveries
        self.ttl_s = ttl_s

    def key(self, message: AbstractIncomingMessage) -> str:
        identity = message.message_id or hashlib.sha256(message.body).hexdigest()
        return f"{self.namespace}:deliveries:{identity}"

    async def exceeded(self, message: AbstractIncomingMessage) -> int | None:
        """The number of deliveries when it is over the maximum, else None."""
        if not message.redelivered:
            return None
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(self.key(message))
                pipe.expire(self.key(message), self.ttl_s)
                redeliveries, _ = await pipe.execute()
        except RedisError as exc:  # a guard, not a gate: never block work on it
            log.warning("cannot count deliveries", extra={"error": str(exc), "id": message.message_id})
            return None
        deliveries = int(redeliveries) + 1
        return deliveries if deliveries > self.max_deliveries else None
