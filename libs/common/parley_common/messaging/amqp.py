"""Connecting to RabbitMQ and the envelope every Parley message travels in.

An envelope is a protobuf body plus headers: the message type and schema version (also in
the `type` property), the idempotency key, and the W3C trace context.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from google.protobuf.message import DecodeError, Message
from yarl import URL

from parley_common.messaging.topology import SCHEMA_VERSION
from parley_common.observability.telemetry import inject_headers

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

# How soon a dropped connection tries again (on the next node).
RECONNECT_INTERVAL_S = 1.0


class PoisonMessage(Exception):
    """A message that can never be processed: wrong type, unknown version or undecodable body."""


def broker_urls(setting: str) -> list[str]:
    """The broker URLs of PARLEY_AMQP_URL: one URL, or several separated by commas (the nodes
    of a RabbitMQ cluster, tried in turn)."""
    urls = [part.strip() for part in setting.split(",") if part.strip()]
    if not urls:
        raise ValueError("PARLEY_AMQP_URL names no broker")
    return urls


class FailoverConnection(RobustConnection):
    """A robust connection to one of several nodes of a cluster.

    aio-pika's robust connection reconnects to the one URL it was given and, once connected,
    restores its channels: queues and exchanges are declared again (with their arguments) and
    consumers consume again. This one moves on to the next node before every new attempt, so
    a dead node is left behind and the services carry on through any node that is up.
    """

    def __init__(self, urls: list[str], start: int, **kwargs: Any) -> None:
        self._urls = [URL(url) for url in urls]
        self._index = start % len(self._urls)
        self._attempted = False
        super().__init__(self._urls[self._index], **kwargs)

    @property
    def url(self) -> URL:
        return self._urls[self._index]

    @url.setter
    def url(self, value: URL) -> None:
        # Set by aio-pika at start (the current node's URL) and when a secret is updated: the
        # current node's, and any other node's with the same user, take the new password.
        current = self._urls[self._index]
        for i, known in enumerate(self._urls):
            if i == self._index or (known.user == current.user and known.password == current.password):
                self._urls[i] = known.with_password(value.password) if value.password is not None else known

    @property
    def transport(self) -> Any:
        return self._transport

    @transport.setter
    def transport(self, value: Any) -> None:
        # aio-pika clears the transport before every connection attempt: each attempt after
        # the first goes to the next node.
        if value is None and getattr(self, "_attempted", False):
            self._index = (self._index + 1) % len(self._urls)
        elif value is not None:
            self._attempted = True
        self._transport = value


async def connect(url: str, timeout_s: float) -> AbstractRobustConnection:
    """Connect to the broker (PARLEY_AMQP_URL: one URL or a cluster's, comma-separated), with
    exponential backoff and jitter over the nodes until `timeout_s` has passed.

    The connection is robust: when it drops, it reconnects to the next node that answers and
    declares its queues and consumers again by itself (FailoverConnection).
    """
    urls = broker_urls(url)
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    # Start at a random node (the clients of a cluster spread over its nodes), then the next.
    node = random.randrange(len(urls))
    while True:
        connection = FailoverConnection(urls, node, reconnect_interval=RECONNECT_INTERVAL_S)
        node += 1
        try:
            await connection.connect(timeout=10)
            return connection
        except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
            await connection.close()
            if time.monotonic() + delay > deadline:
                raise
            log.warning("broker not reachable, retrying", extra={"error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)


async def confirmed_channel(connection: AbstractRobustConnection) -> AbstractChannel:
    """A channel whose publishes the broker confirms, and on which a mandatory publish that no
    queue takes (a binding gone, a queue deleted) raises DeliveryError instead of being
    dropped with a log line (aio-pika's default): the publisher then hands its work back."""
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


def envelope(
    body: Message,
    *,
    message_type: str,
    idempotency_key: str,
    persistent: bool = True,
    expiration_s: float | None = None,
    traced: bool = True,
) -> aio_pika.Message:
    """`traced=False` leaves out the trace context: stream frames, sent by the thousand, belong
    to the trace of the job that sends them and need no context of their own."""
    headers: dict[str, Any] = {"x-schema-version": SCHEMA_VERSION, "x-idempotency-key": idempotency_key}
    if traced:
        inject_headers(headers)
    return aio_pika.Message(
        body.SerializeToString(),
        content_type="application/x-protobuf",
        type=message_type,
        message_id=idempotency_key,
        headers=headers,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
        expiration=expiration_s,
        timestamp=time.time(),
    )


def open_envelope(message: AbstractIncomingMessage, cls: type[M], message_type: str) -> M:
    """Decode an incoming message, or raise PoisonMessage saying why it can never be handled."""
    if message.type != message_type:
        raise PoisonMessage(f"expected type {message_type}, got {message.type!r}")
    version = (message.headers or {}).get("x-schema-version")
    if version != SCHEMA_VERSION:
        raise PoisonMessage(f"unsupported schema version {version!r}")
    out: M = cls()
    try:
        out.ParseFromString(message.body)
    except DecodeError as exc:
        raise PoisonMessage(f"undecodable body: {exc}") from None
    return out
