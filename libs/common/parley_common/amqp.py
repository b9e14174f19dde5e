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
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from google.protobuf.message import DecodeError, Message

from .telemetry import inject_headers
from .topology import SCHEMA_VERSION

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class PoisonMessage(Exception):
    """A message that can never be processed: wrong type, unknown version or undecodable body."""


async def connect(url: str, timeout_s: float) -> AbstractRobustConnection:
    """Connect with exponential backoff and jitter until `timeout_s` has passed.

    The connection is robust: after a broker restart aio-pika reconnects and re-declares
    queues and consumers by itself.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        try:
            return await aio_pika.connect_robust(url, timeout=10)
        except (OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("broker not reachable, retrying", extra={"error": str(exc), "retry_in_s": delay})
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)


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
