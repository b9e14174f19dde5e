"""This gateway's reply queue: its frames, read without aio-pika's per-message layer.

Frames come by the dozen per answer, and aio-pika hands each one to its callback through an
`IncomingMessage` (some twenty attributes set one by one) and a task of its own, on top of the
task aiormq makes for each delivery: a tenth of the gateway's CPU on 300-token answers. So the
queue is consumed through aio-pika as before (its robust channel declares the queue and consumes
it again after a reconnect, with `bus.frames`), and then the consumer's entry in the aiormq
channel underneath is pointed at `ReplyFrames.on_delivery`, which decodes the delivered frame as
it is; again each time the channel is reopened. Whenever that entry is aio-pika's (a consumer
restored some other way), `bus.frames` does the same decoding, only slower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractQueue, AbstractRobustChannel
from aiormq.abc import DeliveredMessage
from google.protobuf.message import DecodeError

from parley.v1 import chat_pb2
from parley_common.messaging.bus import frames
from parley_common.messaging.topology import SCHEMA_VERSION, STREAM_EVENT

log = logging.getLogger(__name__)


def decode_frame(message: DeliveredMessage) -> chat_pb2.StreamEvent | None:
    """The frame a delivery carries, or None (logged) when it is not one this gateway reads:
    what `amqp.open_envelope` checks (type, schema version, body)."""
    properties = message.header.properties
    reason = None
    if properties.message_type != STREAM_EVENT:
        reason = f"expected type {STREAM_EVENT}, got {properties.message_type!r}"
    elif (version := (properties.headers or {}).get("x-schema-version")) != SCHEMA_VERSION:
        reason = f"unsupported schema version {version!r}"
    else:
        event = chat_pb2.StreamEvent()
        try:
            event.ParseFromString(message.body)
            return event
        except DecodeError as exc:
            reason = f"undecodable body: {exc}"
    log.error("dropping bad frame", extra={"reason": reason})
    return None


class ReplyFrames:
    """Consumes the reply queue (no-ack) into `handler`, one decoded frame at a time."""

    def __init__(self, channel: AbstractRobustChannel, handler: Callable[[chat_pb2.StreamEvent], None]) -> None:
        self.channel = channel
        self.handler = handler
        self.consumer_tag: str | None = None
        self._taking_over: asyncio.Task[None] | None = None

    async def start(self, queue: AbstractQueue) -> None:
        self.consumer_tag = await queue.consume(frames(chat_pb2.StreamEvent, STREAM_EVENT, self.handler), no_ack=True)
        await self.take_over()
        self.channel.reopen_callbacks.add(self._reopened)

    async def take_over(self) -> bool:
        """Point the consumer at `on_delivery` (True when it is now)."""
        underlay = cast(aiormq.Channel, await self.channel.get_underlay_channel())
        consumers: dict[str, Any] = underlay.consumers
        if self.consumer_tag is None or self.consumer_tag not in consumers:
            return False
        consumers[self.consumer_tag] = self.on_delivery
        return True

    def _reopened(self, *_: object) -> None:
        # Not awaited within the channel's restore (which may wait for the connection to be
        # ready): until this runs, aio-pika's consumer reads the frames.
        self._taking_over = asyncio.get_running_loop().create_task(self._take_over_reopened())

    async def _take_over_reopened(self) -> None:
        try:
            await self.take_over()
        except Exception as exc:  # closed again meanwhile: aio-pika's consumer, as before
            log.info("reply queue consumer left to aio-pika", extra={"error": str(exc)})

    async def on_delivery(self, message: DeliveredMessage) -> None:
        event = decode_frame(message)
        if event is not None:
            self.handler(event)
