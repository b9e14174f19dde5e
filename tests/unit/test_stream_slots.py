"""Stream slots on a real Redis: answers and open connections share the user's limit; the
first connection to an answer being generated rides on the answer's slot; slots expire."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.stream_slots import Refused, StreamSlots
from parley_gateway.turns.connection_slot import ConnectionSlot
from parley_gateway.turns.stream import TurnStream


@pytest.fixture
async def slots(redis: Redis) -> AsyncIterator[StreamSlots]:
    namespace = "t" + uuid.uuid4().hex[:10]
    yield StreamSlots(redis, namespace, limit=3, connection_ttl_s=0.5)
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


async def test_an_answer_with_its_connection_costs_one_slot_and_more_connections_cost_one_each(
    slots: StreamSlots,
) -> None:
    assert await slots.acquire("u", "r1", "c1") is None  # the turn and its own stream
    assert await slots.acquire_connection("u", "r1", "c2") is None  # a second stream of it
    assert await slots.acquire_connection("u", "r1", "c3") is None
    assert await slots.acquire_connection("u", "r1", "c4") == Refused(3), "the limit is reached"
    assert await slots.acquire("u", "r2", "c5") == Refused(3), "no new answer either"
    assert await slots.acquire_connection("other-user", "r9", "c1") is None, "limits are per user"

    await slots.release_connection("u", "r1", "c1")  # the turn's own client hung up
    # c2 now rides on the answer; one slot is free.
    assert await slots.acquire_connection("u", "r1", "c6") is None
    assert await slots.acquire_connection("u", "r1", "c7") == Refused(3)


async def test_a_client_that_lost_its_stream_resumes_without_paying_twice(slots: StreamSlots) -> None:
    for i in range(3):
        assert await slots.acquire("u", f"r{i}", f"c{i}") is None
    for i in range(3):
        await slots.release_connection("u", f"r{i}", f"c{i}")  # every connection dropped
    for i in range(3):
        assert await slots.acquire_connection("u", f"r{i}", f"again{i}") is None
    assert await slots.acquire_connection("u", "r0", "extra") == Refused(3)


async def test_a_finished_answers_streams_each_cost_a_slot_until_they_close(slots: StreamSlots) -> None:
    assert await slots.acquire("u", "r1", "c1") is None
    await slots.release("u", "r1")  # the answer ended; its stream is still open
    assert await slots.acquire_connection("u", "r1", "c2") is None
    assert await slots.acquire_connection("u", "r1", "c3") is None
    assert await slots.acquire_connection("u", "r1", "c4") == Refused(3)
    await slots.release_connection("u", "r1", "c1")
    assert await slots.acquire_connection("u", "r1", "c4") is None


async def test_connections_expire_unless_renewed(slots: StreamSlots) -> None:
    for name in ("kept", "gone-1", "gone-2"):
        assert await slots.acquire_connection("u", "r1", name) is None
    assert await slots.acquire_connection("u", "r1", "late") == Refused(3)
    for _ in range(4):
        await asyncio.sleep(0.2)
        await slots.renew_connection("u", "r1", "kept")
    # The two that no gateway renewed (a crashed gateway's) are given back; the renewed one stays.
    assert await slots.acquire_connection("u", "r1", "late-1") is None
    assert await slots.acquire_connection("u", "r1", "late-2") is None
    assert await slots.acquire_connection("u", "r1", "late-3") == Refused(3)


async def test_an_answer_slot_outlives_the_connection_lease(slots: StreamSlots, redis: Redis) -> None:
    assert await slots.acquire("u", "r1", "c1") is None
    await slots.renew_connection("u", "r1", "c1")
    await asyncio.sleep(0.7)  # the connection's lease lapsed; the answer's (15 min) did not
    assert await redis.zscore(slots.key("u"), "r1") is not None
    assert await redis.pttl(slots.key("u")) > 60_000


async def _events() -> AsyncIterator[Any]:
    await asyncio.sleep(3600)
    yield None  # pragma: no cover


async def test_a_served_connection_keeps_its_slot_and_gives_it_back_however_it_ends(
    slots: StreamSlots, redis: Redis
) -> None:
    for ending in ("ends", "fails", "is cancelled"):
        slot = ConnectionSlot(slots, "u", "r1")
        assert await slots.acquire_connection("u", "r1", slot.connection_id) is None
        member = slots.connection_member("r1", slot.connection_id)
        stream = TurnStream("r1", "c1", _events(), slot=slot)

        async def serve(stream: TurnStream = stream, ending: str = ending, member: str = member) -> None:
            async with stream.held():
                await asyncio.sleep(1.2)  # more than twice the lease: renewed meanwhile
                expiry = await redis.zscore(slots.key("u"), member)
                assert expiry is not None and expiry > time.time() * 1000, "renewed while served"
                if ending == "fails":
                    raise RuntimeError("the client went away")
                if ending == "is cancelled":
                    await asyncio.sleep(3600)

        task = asyncio.create_task(serve())
        if ending == "is cancelled":
            await asyncio.sleep(1.5)
            task.cancel()
        with contextlib.suppress(RuntimeError, asyncio.CancelledError):
            await task
        assert await redis.zscore(slots.key("u"), member) is None, f"given back when the connection {ending}"


async def test_an_answer_that_ended_gives_its_slot_back_when_one_is_asked_for(slots: StreamSlots) -> None:
    for i in range(3):
        assert await slots.acquire("u", f"r{i}", f"c{i}") is None
        await slots.release_connection("u", f"r{i}", f"c{i}")
    ended = {"r0"}  # r0's last frame was sent; its worker has not given the slot back yet

    async def finished(response_id: str) -> bool:
        return response_id in ended

    assert await slots.acquire("u", "r3", "c3") == Refused(3)
    assert await slots.free_finished("u", finished) == 1
    assert await slots.acquire("u", "r3", "c3") is None
    # An open connection keeps its slot, even to an answer that has ended.
    ended.add("r3")
    assert await slots.free_finished("u", finished) == 1  # r3's answer, not its connection c3
    assert await slots.acquire("u", "r4", "c4") == Refused(3), "r1, r2 and the connection to r3 hold all three"


async def _ended_answer() -> AsyncIterator[Any]:
    yield chat_pb2.StreamEvent(seq=1, delta=chat_pb2.StreamDelta(text="hi"))
    yield chat_pb2.StreamEvent(seq=2, done=chat_pb2.StreamDone(finish_reason="stop"))


async def test_a_connection_gives_its_slot_back_before_the_last_frame_is_sent(slots: StreamSlots, redis: Redis) -> None:
    slot = ConnectionSlot(slots, "u", "r1")
    assert await slots.acquire_connection("u", "r1", slot.connection_id) is None
    member = slots.connection_member("r1", slot.connection_id)
    stream = TurnStream("r1", "c1", _ended_answer(), slot=slot)
    held_at: list[bool] = []
    async with stream.held():
        async for _item in stream.events:
            held_at.append(await redis.zscore(slots.key("u"), member) is not None)
    assert held_at == [True, False], "held while the answer streams, free when its last frame goes out"
