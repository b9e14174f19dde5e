"""The gateway's relay, driven directly over a feed: coalescing deltas, dropping frames the
client has, heartbeats and the idle timeout, final events, handing a lagging feed to the log."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.v1 import chat_pb2
from parley_gateway.turns.feed import (
    ENDED,
    GONE,
    LOG_UNAVAILABLE,
    SHUTDOWN,
    Feed,
    FrameQueue,
    Heartbeat,
    Item,
    Notice,
    Truncated,
)
from parley_gateway.turns.relay import RelayTiming, relay


def timing(
    coalesce_ms: float = 0, coalesce_max_bytes: int = 8192, heartbeat_s: float = 15, stream_idle_timeout_s: float = 120
) -> RelayTiming:
    return RelayTiming(
        heartbeat_s=heartbeat_s,
        stream_idle_timeout_s=stream_idle_timeout_s,
        coalesce_s=coalesce_ms / 1000,
        coalesce_max_bytes=coalesce_max_bytes,
    )


def frame(seq: int, **kind: Any) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(response_id="r", conversation_id="c", seq=seq, **kind)


def delta(seq: int, text: str) -> chat_pb2.StreamEvent:
    return frame(seq, delta=chat_pb2.StreamDelta(text=text))


def done(seq: int) -> chat_pb2.StreamEvent:
    return frame(seq, done=chat_pb2.StreamDone(finish_reason="stop"))


def feed_of(items: list[Item], *, live: bool = True) -> Feed:
    feed = Feed(FrameQueue(), live=live)
    for item in items:
        feed.queue.put_nowait(item)
    return feed


def no_log(seq: int) -> None:
    raise AssertionError(f"a feed that kept up went to the replay log after frame {seq}")


async def run(t: RelayTiming, items: list[Item], after: int = 0, **kw: Any) -> list[Any]:
    feed = feed_of(items, **kw)
    return [out async for out in relay(feed, t, "r", "c", after, continue_from_log=no_log)]


async def test_the_first_delta_goes_at_once_later_ones_are_merged() -> None:
    frames: list[Item] = [
        frame(1, meta=chat_pb2.StreamMeta(model="m")),
        delta(2, "Hel"),
        delta(3, "lo"),
        delta(4, " wor"),
        delta(5, "ld"),
        done(6),
    ]
    out = await run(timing(coalesce_ms=50), frames)
    kinds = [(o.WhichOneof("kind"), o.seq) for o in out]
    assert kinds == [("meta", 1), ("delta", 2), ("delta", 5), ("done", 6)]
    assert out[1].delta.text == "Hel" and out[2].delta.text == "lo world"


async def test_without_coalescing_every_delta_is_its_own_event() -> None:
    out = await run(timing(coalesce_ms=0), [delta(1, "a"), delta(2, "b"), delta(3, "c"), done(4)])
    assert [o.seq for o in out] == [1, 2, 3, 4]


async def test_the_byte_limit_flushes_a_merged_delta_early() -> None:
    frames: list[Item] = [delta(1, "x"), *[delta(i, "y" * 10) for i in range(2, 12)], done(12)]
    out = await run(timing(coalesce_ms=1000, coalesce_max_bytes=30), frames)
    texts = [o.delta.text for o in out if o.WhichOneof("kind") == "delta"]
    assert texts[0] == "x" and all(len(t) >= 30 for t in texts[1:-1])
    assert "".join(texts) == "x" + "y" * 100


async def test_frames_the_client_has_are_dropped_and_the_stream_ends_on_error() -> None:
    frames: list[Item] = [
        delta(3, "old"),
        delta(5, "new"),
        delta(5, "dup"),
        frame(6, error=chat_pb2.StreamError(code="x", message="m")),
        delta(7, "late"),
    ]
    out = await run(timing(coalesce_ms=0), frames, after=4, live=False)
    assert [(o.seq, o.WhichOneof("kind")) for o in out] == [(5, "delta"), (6, "error")]


async def test_silence_gives_heartbeats_then_a_timeout_notice() -> None:
    out = await run(timing(heartbeat_s=0.05, stream_idle_timeout_s=0.2), [])
    assert isinstance(out[0], Heartbeat)
    assert isinstance(out[-1], Notice) and out[-1].code == "stream_timeout"


async def test_a_queued_frame_extends_the_idle_timeout_by_its_announced_wait() -> None:
    queued = frame(1, queued=chat_pb2.StreamQueued(position=1, estimated_wait_ms=300))
    feed = feed_of([queued])
    stream = relay(feed, timing(heartbeat_s=0.05, stream_idle_timeout_s=0.1), "r", "c", 0, continue_from_log=no_log)
    assert (await anext(stream)).WhichOneof("kind") == "queued"  # type: ignore[union-attr]
    started = asyncio.get_running_loop().time()
    rest = [out async for out in stream]
    assert isinstance(rest[-1], Notice) and rest[-1].code == "stream_timeout"
    assert asyncio.get_running_loop().time() - started >= 0.35, "the wait the queue announced, then the timeout"


async def test_shutdown_flushes_held_text_then_gives_a_final_retryable_event() -> None:
    out = await run(timing(coalesce_ms=10_000), [delta(1, "a"), delta(2, "b"), delta(3, "c"), SHUTDOWN])
    assert [o.delta.text for o in out[:-1]] == ["a", "bc"], "no text is lost at shutdown"
    assert isinstance(out[-1], Notice) and out[-1].code == "gateway_shutdown" and out[-1].retryable


async def test_an_unreadable_or_trimmed_log_ends_the_stream_with_a_notice() -> None:
    unreadable = await run(timing(), [delta(1, "a"), LOG_UNAVAILABLE], live=False)
    assert isinstance(unreadable[-1], Notice) and unreadable[-1].code == "replay_unavailable"
    trimmed = await run(timing(), [Truncated(after_seq=2, oldest_seq=9)], after=2, live=False)
    assert len(trimmed) == 1 and isinstance(trimmed[0], Notice)
    assert trimmed[0].code == "replay_truncated" and not trimmed[0].retryable
    assert "frames 3 to 8" in trimmed[0].message


async def test_a_client_gone_or_an_answer_already_ended_ends_the_stream_with_nothing_more() -> None:
    assert await run(timing(), [GONE, delta(1, "never sent")]) == []
    out = await run(timing(coalesce_ms=10_000), [delta(1, "a"), delta(2, "b"), ENDED], live=False)
    assert [o.delta.text for o in out] == ["a", "b"]


async def test_a_live_feed_that_misses_a_frame_continues_from_the_log_after_what_was_sent() -> None:
    feed = feed_of([delta(1, "a"), delta(2, "b"), delta(4, "d")])
    asked: list[int] = []

    def from_log(seq: int) -> None:
        asked.append(seq)
        # What the replay log holds after that frame (turns/replay_follow.py feeds it).
        for item in (delta(3, "c"), delta(4, "d"), done(5)):
            feed.queue.put_nowait(item)

    out = [o async for o in relay(feed, timing(), "r", "c", 0, continue_from_log=from_log)]
    assert asked == [2] and not feed.live
    assert [o.seq for o in out] == [1, 2, 3, 4, 5], "every frame once, in order"


async def test_the_feeds_tasks_end_with_the_relay() -> None:
    feed = feed_of([done(1)])
    follower = asyncio.create_task(asyncio.Event().wait())
    feed.tasks.append(follower)
    assert [o.seq async for o in relay(feed, timing(), "r", "c", 0, continue_from_log=no_log)] == [1]  # type: ignore[union-attr]
    with pytest.raises(asyncio.CancelledError):
        await follower
