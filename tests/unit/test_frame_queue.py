"""A feed's queue (turns/feed.FrameQueue) keeps asyncio.Queue's promises that the relay and the
replay log's pump rely on: order, its bound, a reader and a writer that wait, and nothing lost
when a wait is cut short (the relay's deadlines cancel its read)."""

from __future__ import annotations

import asyncio

import pytest

from parley.v1 import chat_pb2
from parley_gateway.turns.feed import FrameQueue


def frame(seq: int) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(response_id="r", seq=seq)


async def test_frames_come_out_in_order_and_a_full_queue_refuses_or_waits() -> None:
    queue = FrameQueue(maxsize=2)
    queue.put_nowait(frame(1))
    queue.put_nowait(frame(2))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(frame(3))
    waiting = asyncio.create_task(queue.put(frame(3)))
    await asyncio.sleep(0)
    assert not waiting.done(), "a writer waits while the queue is full"
    assert queue.get_nowait().seq == 1
    await asyncio.wait_for(waiting, 1)
    assert [(await queue.get()).seq for _ in range(2)] == [2, 3]
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_reader_waits_for_the_next_frame_and_a_cut_short_read_loses_nothing() -> None:
    queue = FrameQueue(maxsize=4)
    reading = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not reading.done()
    queue.put_nowait(frame(1))
    assert (await asyncio.wait_for(reading, 1)).seq == 1
    # As the relay's deadline does: a read given no time at all, then one cancelled while waiting.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await queue.get()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait(frame(2))
    assert queue.get_nowait().seq == 2, "the frame went to no cancelled reader"
    # Two readers waiting: each is woken to look again, and each frame is read once.
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(frame(3))
    queue.put_nowait(frame(4))
    assert sorted([f.seq for f in await asyncio.wait_for(asyncio.gather(first, second), 1)]) == [3, 4]


async def test_a_long_queue_read_and_refilled_keeps_its_order() -> None:
    queue = FrameQueue()
    for seq in range(200):
        queue.put_nowait(frame(seq))
    assert [queue.get_nowait().seq for _ in range(150)] == list(range(150))
    for seq in range(200, 300):
        queue.put_nowait(frame(seq))
    assert queue.qsize() == 150
    assert [(await queue.get()).seq for _ in range(150)] == list(range(150, 300))
    assert queue.empty()
