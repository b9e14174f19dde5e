"""The one way every Parley service consumes from RabbitMQ.

A handler holds only its own logic: `handler(body, message)` gets the decoded protobuf. The
`Subscriber` around it does the rest, the same way in every service:

- decode and validate the message (its type and schema version); one that can never be
  handled (poison) goes to the dead letters with the reason;
- open the consumer span, a child of the trace its headers carry;
- count the work in flight, so a stopping process finishes it before it goes;
- ack once the handler has returned: the work is done. A handler that raises `Retry` (or
  fails unexpectedly) has its message tried again after RETRY_DELAY_S from the queue's
  waiting room, never sleeping on a prefetch slot; after `max_attempts` counted failures it
  goes to the dead letters.

A message whose handling kills the process is never acked: the broker delivers it again,
counts the deliveries (quorum queues do) and dead-letters it past DELIVERY_LIMIT, with
`x-death` saying `delivery_limit`. No counter of ours is involved.

Stream frames are the exception: sent by the thousand, unacked (no_ack) and untraced, they
go through `frames()`, which only decodes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, MessageProcessError
from google.protobuf.message import Message

from parley_common.messaging.amqp import PoisonMessage, open_envelope
from parley_common.messaging.topology import Topology
from parley_common.observability.telemetry import consumer_span
from parley_common.service.lifecycle import InFlight

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

ATTEMPTS_HEADER = "x-parley-attempts"
REASON_HEADER = "x-parley-dead-reason"
SOURCE_HEADER = "x-parley-source-queue"
# Counted failures of one message before it is dead-lettered.
MAX_ATTEMPTS = 5


class Retry(Exception):
    """Raised by a handler: try this message again later.

    `counted=False` for a failure that is not the message's fault and may last (the store it
    writes to is down): it is tried again for as long as that lasts, never dead-lettered."""

    def __init__(self, reason: str, *, counted: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counted = counted


def attempts(message: AbstractIncomingMessage) -> int:
    """How many counted failures the message has had."""
    value = (message.headers or {}).get(ATTEMPTS_HEADER, 0)
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


class DeadLetters:
    """Publishes a consumer's copies of messages: to the dead letters (with the reason) or to a
    queue's waiting room (to be tried again). `channel` has publisher confirms on, so the
    original is acked only once its copy is safe."""

    def __init__(self, channel: AbstractChannel, topology: Topology) -> None:
        self.channel = channel
        self.topology = topology
        self._declared: set[str] = set()

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
        if "" not in self._declared:
            await self.topology.declare_dead_letter_queue(self.channel)
            self._declared.add("")
        copy = self._copy(message, **{REASON_HEADER: reason[:500], SOURCE_HEADER: source_queue})
        exchange = await self.channel.get_exchange(self.topology.dead_letter_exchange, ensure=False)
        await exchange.publish(copy, routing_key=source_queue)
        await message.ack()
        log.error("dead-lettered a message", extra={"queue": source_queue, "reason": reason, "id": message.message_id})

    async def retry_later(
        self, message: AbstractIncomingMessage, source_queue: str, reason: str, max_attempts: int | None
    ) -> None:
        """Put the message in `source_queue`'s waiting room, from which the broker returns it
        after RETRY_DELAY_S; or bury it once it has failed `max_attempts` times (None: never)."""
        count = attempts(message) + (1 if max_attempts is not None else 0)
        if max_attempts is not None and count >= max_attempts:
            await self.bury(message, source_queue, f"failed {count} times; last: {reason}")
            return
        if source_queue not in self._declared:
            await self.topology.declare_retry_queue(self.channel, source_queue)
            self._declared.add(source_queue)
        await self.channel.default_exchange.publish(
            self._copy(message, **{ATTEMPTS_HEADER: count}), routing_key=self.topology.retry_queue(source_queue)
        )
        await message.ack()


class Subscriber(Generic[M]):
    """Consumes `body` messages of `message_type` from `queue` for `handler` (see the module)."""

    def __init__(
        self,
        *,
        queue: str,
        body: type[M],
        message_type: str,
        handler: Callable[[M, AbstractIncomingMessage], Awaitable[None]],
        span: str,
        in_flight: InFlight,
        dead_letters: DeadLetters,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.queue = queue
        self.body = body
        self.message_type = message_type
        self.handler = handler
        self.span = span
        self.in_flight = in_flight
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with self.in_flight, consumer_span(__name__, self.span, message.headers):
            try:
                body = open_envelope(message, self.body, self.message_type)
                await self.handler(body, message)
            except PoisonMessage as exc:
                # Never handled, however often delivered: to the dead letters at once.
                await self._settle(self.dead_letters.bury(message, self.queue, str(exc)))
                return
            except Retry as exc:
                log.warning("handing a message back to try later", extra={"queue": self.queue, "reason": exc.reason})
                limit = self.max_attempts if exc.counted else None
                await self._settle(self.dead_letters.retry_later(message, self.queue, exc.reason, limit))
                return
            except Exception as exc:
                log.exception("handler failed; will try the message again", extra={"queue": self.queue})
                reason = f"{type(exc).__name__}: {exc}"
                await self._settle(self.dead_letters.retry_later(message, self.queue, reason, self.max_attempts))
                return
            await self._settle(message.ack())

    async def _settle(self, outcome: Awaitable[None]) -> None:
        try:
            await outcome
        except (ChannelInvalidStateError, MessageProcessError, AMQPError) as exc:
            # The connection dropped while the work ran: the broker delivers the message again,
            # and every handler is idempotent (turns, jobs and completions are keyed by id).
            log.info("could not settle a message; the broker will deliver it again", extra={"error": str(exc)})


class Consumers:
    """The consumers of one process, on one channel: started queue by queue, stopped together
    when the process stops taking work (then `in_flight` drains what they started)."""

    def __init__(self, dead_letters: DeadLetters, in_flight: InFlight) -> None:
        self.dead_letters = dead_letters
        self.in_flight = in_flight
        self._consuming: list[tuple[AbstractQueue, str]] = []

    async def subscribe(
        self,
        queue: AbstractQueue,
        body: type[M],
        message_type: str,
        handler: Callable[[M, AbstractIncomingMessage], Awaitable[None]],
        span: str,
    ) -> None:
        subscriber = Subscriber(
            queue=queue.name,
            body=body,
            message_type=message_type,
            handler=handler,
            span=span,
            in_flight=self.in_flight,
            dead_letters=self.dead_letters,
        )
        self._consuming.append((queue, await queue.consume(subscriber)))

    async def stop(self) -> None:
        for queue, tag in self._consuming:
            try:
                await queue.cancel(tag)
            except AMQPError as exc:  # the connection is gone: nothing is consumed anyway
                log.info("could not cancel a consumer", extra={"queue": queue.name, "error": str(exc)})
        self._consuming.clear()


def frames(
    body: type[M], message_type: str, handler: Callable[[M], None]
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    """A no-ack consumer of stream frames: decoded and handed on, nothing else (see the module).
    A frame that cannot be decoded is dropped: the replay log has every frame anyway."""

    async def on_frame(message: AbstractIncomingMessage) -> None:
        try:
            event = open_envelope(message, body, message_type)
        except PoisonMessage as exc:
            log.error("dropping bad frame", extra={"reason": str(exc)})
            return
        handler(event)

    return on_frame


__all__ = ["Consumers", "DeadLetters", "Retry", "Subscriber", "attempts", "frames"]
