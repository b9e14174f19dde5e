"""ResponseStream on the real broker and Redis: the frames it publishes to a reply queue (several
in one write) are the messages `envelope` makes, one per frame, in order, each the same bytes
as its replay-log entry, and read by the gateway's frame consumer (bus.frames)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import connect, envelope
from parley_common.messaging.bus import frames
from parley_common.messaging.replay import ReplayLog, ResponseStream
from parley_common.messaging.topology import STREAM_EVENT
from parley_dev.infra import ensure_local

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def connection() -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    ensure_local(AMQP_URL)
    connection = await connect(AMQP_URL, 10)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def log(redis: Redis) -> AsyncIterator[ReplayLog]:
    namespace = "t" + uuid.uuid4().hex[:10]
    yield ReplayLog(redis, namespace)
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


async def test_frames_reach_the_reply_queue_as_envelope_makes_them_in_order(
    connection: aio_pika.abc.AbstractConnection, log: ReplayLog
) -> None:
    channel = await connection.channel(publisher_confirms=False)
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    decoded: list[chat_pb2.StreamEvent] = []
    all_in = asyncio.Event()
    decode = frames(chat_pb2.StreamEvent, STREAM_EVENT, decoded.append)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        received.append(message)
        await decode(message)
        if len(received) == 6:
            all_in.set()

    await queue.consume(on_message, no_ack=True)
    stream = ResponseStream(channel=channel, replay=log, response_id="r1", conversation_id="c1", reply_to=queue.name)
    await stream.emit_many({"meta": chat_pb2.StreamMeta(model="m")}, {"delta": chat_pb2.StreamDelta(text="Hel")})
    await stream.emit(delta=chat_pb2.StreamDelta(text="lo" * 5000))  # a frame of its own, larger than most
    await stream.emit_many(
        {"delta": chat_pb2.StreamDelta(text="!")},
        {"usage": chat_pb2.Usage(input_tokens=3, output_tokens=4)},
        {"done": chat_pb2.StreamDone(finish_reason="stop")},
    )
    await asyncio.wait_for(all_in.wait(), 10)

    logged = await log.read_after("r1", 0)
    assert [f.seq for f in logged] == [1, 2, 3, 4, 5, 6]
    assert decoded == logged, "each frame once, in order, as the log has it"
    for message, frame in zip(received, logged, strict=True):
        expected = envelope(
            frame, message_type=STREAM_EVENT, idempotency_key=f"r1:{frame.seq}", persistent=False, traced=False
        )
        assert message.body == frame.SerializeToString()
        assert (message.type, message.message_id, message.content_type) == (
            expected.type,
            expected.message_id,
            expected.content_type,
        )
        assert message.headers == expected.headers
        assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
        assert message.timestamp is not None and message.expiration is None
    await channel.close()


async def test_a_closed_channel_fails_the_emit_and_the_log_still_has_the_frame(
    connection: aio_pika.abc.AbstractConnection, log: ReplayLog
) -> None:
    channel = await connection.channel(publisher_confirms=False)
    stream = ResponseStream(channel=channel, replay=log, response_id="r2", conversation_id="c1", reply_to="nobody")
    await stream.emit(meta=chat_pb2.StreamMeta(model="m"))  # to a queue that does not exist: dropped, no error
    await channel.close()
    with pytest.raises(Exception):  # noqa: B017 (aio-pika's or aiormq's, whichever notices first)
        await stream.emit(delta=chat_pb2.StreamDelta(text="x"))
    assert [f.seq for f in await log.read_after("r2", 0)] == [1, 2]


async def test_a_stream_renews_its_log_on_its_first_write_and_its_end_not_with_every_frame(log: ReplayLog) -> None:
    stream = ResponseStream(channel=None, replay=log, response_id="r3", conversation_id="c1", reply_to="")  # type: ignore[arg-type]
    key = log.key("r3")
    await stream.emit(meta=chat_pb2.StreamMeta(model="m"))
    assert 3500 < await log.redis.ttl(key) <= log.ttl_s
    await log.redis.expire(key, 100)
    await stream.emit(delta=chat_pb2.StreamDelta(text="a"))
    await stream.emit_many({"delta": chat_pb2.StreamDelta(text="b")}, {"delta": chat_pb2.StreamDelta(text="c")})
    assert await log.redis.ttl(key) <= 100, "a frame of a stream that renewed its log a moment ago does not"
    await stream.emit_many({"usage": chat_pb2.Usage()}, {"done": chat_pb2.StreamDone(finish_reason="stop")})
    assert 100 < await log.redis.ttl(key) <= log.finished_ttl_s
    assert [f.seq for f in await log.read_after("r3", 0)] == [1, 2, 3, 4, 5, 6]
