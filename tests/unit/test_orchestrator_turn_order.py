"""The orchestrator's turn order on a real Redis: what entering learns of the turn before from the
newest frame of its replay log alone, and when that turn reached a model (so waiting for it goes
on to history) or ended before (so the turn before it is waited for instead, and so on back).

History is a real client with nothing behind it: a turn that asks it fails, so a test that returns
shows history was not needed, and one that fails with ParleyError shows it was asked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.clients.history import HistoryClient
from parley_common.errors import ParleyError
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ReplayLog
from parley_orchestrator.turn_order import Previous, Taken, TurnOrder


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def order(redis: Redis, namespace: str) -> AsyncIterator[TurnOrder]:
    history = HistoryClient("127.0.0.1:1", timeout_s=0.3)  # nothing listens there
    yield TurnOrder(
        redis=redis,
        namespace=namespace,
        replay=ReplayLog(redis, namespace),
        history=history,
        cancellations=Cancellations(redis, namespace, None),
        max_wait_s=5,
    )
    await history.close()
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


def frame(response_id: str, seq: int, **kind: Any) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(response_id=response_id, conversation_id="c1", seq=seq, **kind)


async def log(order: TurnOrder, response_id: str, *kinds: str, deltas: int = 0) -> None:
    """A replay log of `kinds` in order ("delta" repeated `deltas` times more), its owner recorded."""
    await order.replay.claim(response_id, "u1", "c1")
    made = {
        "meta": {"meta": chat_pb2.StreamMeta(model="m")},
        "queued": {"queued": chat_pb2.StreamQueued(position=1)},
        "delta": {"delta": chat_pb2.StreamDelta(text="t ")},
        "usage": {"usage": chat_pb2.Usage()},
        "done": {"done": chat_pb2.StreamDone(finish_reason="stop")},
        "error": {"error": chat_pb2.StreamError(code="provider_error", message="x")},
    }
    names = [k for kind in kinds for k in ([kind] * (deltas + 1) if kind == "delta" else [kind])]
    await order.replay.append_many([frame(response_id, i + 1, **made[k]) for i, k in enumerate(names)])


async def wait(order: TurnOrder, response_id: str) -> None:
    previous = await order.enter("c1", response_id)
    assert previous is not None
    await order.wait_for(previous, "u1", "c1", False, _never)


async def _never() -> None:
    raise AssertionError("the turn before had finished: no queued frame")


async def test_the_first_turn_has_none_before_it_and_a_redelivery_keeps_its_place(order: TurnOrder) -> None:
    assert await order.enter("c1", "r1") is None
    assert await order.enter("c1", "r1") is None  # delivered again: still the first
    second = await order.enter("c1", "r2")
    third = await order.enter("c1", "r3")
    assert second is not None and second.response_id == "r1"
    assert third is not None and third.response_id == "r2"
    again = await order.enter("c1", "r2")  # delivered again after r3 entered: the same place
    assert again is not None and again.response_id == "r1"


async def test_entering_reads_only_the_newest_frame_of_a_long_answer(order: TurnOrder) -> None:
    await order.enter("c1", "r1")
    await log(order, "r1", "meta", "delta", "usage", "done", deltas=2000)
    previous = await order.enter("c1", "r2")
    assert previous is not None
    assert previous.last is not None and previous.last.WhichOneof("kind") == "done"
    assert previous.last.seq == 2004
    assert previous.finished


async def test_a_running_turn_and_a_turn_with_no_log(order: TurnOrder, redis: Redis) -> None:
    await order.enter("c1", "r1")
    await log(order, "r1", "meta", "delta")
    running = await order.enter("c1", "r2")
    assert running is not None and running.last is not None and not running.finished
    # No frame yet, but owned (the gateway claimed it): not finished.
    await order.replay.claim("r2", "u1", "c1")
    waiting = await order.enter("c1", "r3")
    assert waiting is not None and waiting.last is None and waiting.owned and not waiting.finished
    # No frame and no owner: nothing is known of it any more, as ReplayLog.finished says.
    await redis.delete(order.replay.owner_key("r2"))
    gone = await order.enter("c1", "r4")
    assert gone is not None and gone.last is None and not gone.owned and gone.finished
    assert gone.finished == await order.replay.finished("r2")


@pytest.mark.parametrize("kinds", [("queued", "error"), ("error",), ("queued", "queued", "error")])
async def test_a_turn_that_failed_before_reaching_a_model_is_not_looked_for_in_history(
    order: TurnOrder, kinds: tuple[str, ...]
) -> None:
    await order.enter("c1", "r1")
    await log(order, "r1", *kinds)
    await wait(order, "r2")  # returns without asking history (which would fail)


async def test_a_turn_gone_from_redis_is_not_looked_for_in_history(order: TurnOrder) -> None:
    await order.enter("c1", "r1")
    await wait(order, "r2")


@pytest.mark.parametrize(
    "kinds",
    [
        ("meta", "delta", "usage", "done"),
        ("queued", "meta", "done"),  # cancelled before its job: Dispatch.end_cancelled
        ("meta", "delta", "error"),  # failed mid-answer: an interrupted answer is stored
        ("queued", "meta", "error"),  # failed after its model was known: a failed answer is stored
        ("meta", "delta", "queued", "error"),  # a takeover that waited for its provider's budget
    ],
)
async def test_a_turn_that_reached_a_model_is_waited_for_in_history(order: TurnOrder, kinds: tuple[str, ...]) -> None:
    await order.enter("c1", "r1")
    await log(order, "r1", *kinds)
    with pytest.raises(ParleyError):
        await wait(order, "r2")  # history was asked (and is not there)


@pytest.mark.parametrize("failed", [1, 3])
async def test_after_turns_that_failed_before_a_model_the_answer_before_them_is_waited_for_in_history(
    order: TurnOrder, failed: int
) -> None:
    """After a history outage: the last answer that streamed waits on the bus to be stored while
    the turns after it fail; the next turn must wait for that answer too, or its message would be
    stored beside the answer instead of after it."""
    await order.enter("c1", "r0")
    await log(order, "r0", "meta", "delta", "usage", "done")
    for i in range(1, failed + 1):
        await order.enter("c1", f"r{i}")
        await log(order, f"r{i}", "error")
    with pytest.raises(ParleyError):
        await wait(order, f"r{failed + 1}")  # history was asked for r0's answer (and is not there)


async def test_turns_that_all_failed_before_a_model_back_to_the_first_are_not_looked_for_in_history(
    order: TurnOrder,
) -> None:
    for i in range(3):
        await order.enter("c1", f"r{i}")
        await log(order, f"r{i}", "queued", "error")
    await wait(order, "r3")  # returns without asking history (which would fail)


async def test_a_turn_left_to_check_its_answer_itself_gets_that_answer_and_history_is_not_asked(
    order: TurnOrder,
) -> None:
    """The orchestrator's append asks for the answer instead (AppendMessage's after_stored_id):
    one call to history, not a read and then the append."""
    await order.enter("c1", "r0")
    await log(order, "r0", "meta", "delta", "usage", "done")
    await order.enter("c1", "r1")
    await log(order, "r1", "error")
    taken = await order.take_turn("u1", "c1", "r2", False, _never, check_stored=False)
    assert (taken.waited, taken.unchecked) == (True, "r0")  # behind the failed r1, r0's answer
    assert 0 < taken.deadline - time.monotonic() <= order.max_wait_s
    await log(order, "r2", "queued", "error")
    assert (await order.take_turn("u1", "c1", "r3", False, _never, check_stored=False)).unchecked == "r0"
    assert await order.take_turn("u1", "c2", "r9", False, _never, check_stored=False) == Taken(waited=False)
    # Turns that all ended before a model leave nothing to check.
    for i in range(3):
        await order.enter("c3", f"s{i}")
        await log(order, f"s{i}", "error")
    last = await order.take_turn("u1", "c3", "s3", False, _never, check_stored=False)
    assert (last.waited, last.unchecked) == (True, "")
    # Asked the usual way, history is asked (and is not there).
    with pytest.raises(ParleyError):
        await order.until_stored("u1", "c1", "r0")


async def running_behind_a_failed_turn(order: TurnOrder) -> Previous:
    """r2 enters behind r1, which failed (it gave up waiting: conversation_busy) while r0, the
    turn before it, still runs."""
    await order.enter("c1", "r0")
    await log(order, "r0", "meta", "delta")
    await order.enter("c1", "r1")
    await log(order, "r1", "error")
    previous = await order.enter("c1", "r2")
    assert previous is not None and previous.response_id == "r1" and previous.finished
    return previous


async def test_a_turn_still_running_behind_a_failed_one_is_waited_for(order: TurnOrder) -> None:
    previous = await running_behind_a_failed_turn(order)
    queued: list[bool] = []

    async def on_queued() -> None:
        queued.append(True)

    order.max_wait_s = 0.5
    with pytest.raises(ParleyError) as raised:
        await order.wait_for(previous, "u1", "c1", False, on_queued)
    assert queued and getattr(raised.value, "code", None) == "conversation_busy"


async def test_the_walk_back_stops_at_a_turn_redis_no_longer_knows(order: TurnOrder) -> None:
    """An expired turn (no log, no owner: it ended long ago) ends the walk: the answers before it
    were stored long ago, or never will be."""
    await order.enter("c1", "r0")
    await log(order, "r0", "meta", "done")
    await order.enter("c1", "r1")  # entered, then forgotten: its log and owner expired
    await order.enter("c1", "r2")
    await log(order, "r2", "error")
    await wait(order, "r3")  # returns without asking history about r0 (which would fail)


async def test_the_walk_back_never_reaches_the_turn_that_waits(order: TurnOrder, redis: Redis) -> None:
    """A request delivered again after its place expired enters behind a newer turn whose place
    points back at it: the walk stops there instead of waiting for itself."""
    await order.enter("c1", "r1")
    await order.replay.claim("r1", "u1", "c1")  # r1 runs (redelivered), owned, no frame yet
    await order.enter("c1", "r2")
    await log(order, "r2", "error")
    await redis.delete(order.place_key("c1", "r1"))  # r1's place expired
    previous = await order.enter("c1", "r1")
    assert previous is not None and previous.response_id == "r2"
    await order.wait_for(previous, "u1", "c1", False, _never, waiting="r1")


async def test_replace_cancels_the_turn_still_running_behind_a_failed_one(order: TurnOrder) -> None:
    previous = await running_behind_a_failed_turn(order)

    async def on_queued() -> None:
        pass

    # The cancellation's flag is set first; its broadcast then needs a broker this order has not.
    with pytest.raises(RuntimeError, match="no control exchange"):
        await order.wait_for(previous, "u1", "c1", True, on_queued, waiting="r2")
    assert await order.cancellations.requested("r0") == "replaced"
    assert await order.cancellations.requested("r1") is None
