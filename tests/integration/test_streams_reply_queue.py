"""A gateway's reply queue on the real broker: its frames are read by the gateway's own consumer
(turns/reply_queue.py, not aio-pika's per-message layer), and still, and again by it, after the
consume channel was closed by the broker and after the connection dropped."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelNotFoundEntity

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import connect, envelope
from parley_common.messaging.topology import STREAM_EVENT
from parley_dev.infra import Infra
from parley_gateway.turns.reply_queue import ReplyFrames
from tests.support.polling import eventually


@pytest.fixture
async def amqp(infra: Infra) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(infra.amqp_url, 10)
    try:
        yield connection
    finally:
        await connection.close()


async def publish(channel: AbstractChannel, queue: str, seq: int, message_type: str = STREAM_EVENT) -> None:
    event = chat_pb2.StreamEvent(response_id="r", seq=seq, delta=chat_pb2.StreamDelta(text=f"t{seq}"))
    message = envelope(event, message_type=message_type, idempotency_key=f"r:{seq}", persistent=False, traced=False)
    await channel.default_exchange.publish(message, routing_key=queue)


async def consumed_by_the_gateway(channel: AbstractRobustChannel, frames: ReplyFrames, lost: object = None) -> bool:
    """The queue's consumer (on a channel other than `lost`) is the gateway's own."""
    underlay: Any = await channel.get_underlay_channel()
    return underlay is not lost and bool(underlay.consumers.get(frames.consumer_tag) == frames.on_delivery)


async def test_frames_reach_the_gateway_consumer_also_after_the_channel_and_the_connection_were_lost(
    amqp: AbstractRobustConnection,
) -> None:
    channel: Any = await amqp.channel()
    name = "test-gw-" + uuid.uuid4().hex[:12]
    queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
    seen: list[int] = []
    frames = ReplyFrames(channel, lambda event: seen.append(event.seq))
    await frames.start(queue)
    assert await consumed_by_the_gateway(channel, frames)
    publisher = await amqp.channel()

    async def delivered(*seqs: int) -> None:
        for seq in seqs:
            await publish(publisher, name, seq)

        async def arrived() -> bool:
            return seen[-len(seqs) :] == list(seqs)

        await eventually(arrived, timeout_s=20, what=f"frames {seqs} (seen {seen})")

    await publish(publisher, name, 1, message_type="parley.v1.ChatRequest")  # not a frame: dropped
    await delivered(2, 3)
    assert seen == [2, 3]

    # The broker closes the consume channel (an error on it); aio-pika opens it again and
    # consumes the queue anew (declared again: without a consumer it was gone meanwhile).
    lost: Any = await channel.get_underlay_channel()
    with pytest.raises(ChannelNotFoundEntity):
        await lost.queue_declare("no-such-queue-" + uuid.uuid4().hex, passive=True)
    await eventually(lambda: consumed_by_the_gateway(channel, frames, lost), timeout_s=20, passing=(Exception,))
    await delivered(4, 5)

    # The connection drops (its socket aborted): aio-pika connects again, declares the
    # exclusive queue anew and consumes it; the gateway's consumer takes over once more.
    lost = await channel.get_underlay_channel()
    connection: Any = amqp.transport.connection  # type: ignore[union-attr]
    writer: asyncio.StreamWriter = connection._writer_task.get_coro().cr_frame.f_locals["writer"]
    writer.transport.abort()
    await eventually(lambda: consumed_by_the_gateway(channel, frames, lost), timeout_s=30, passing=(Exception,))
    publisher = await amqp.channel()
    await delivered(6, 7)
