"""The gateway's relay: coalescing deltas, dropping frames the client has, ending on terminal frames."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_gateway.settings import GatewaySettings
from parley_gateway.turns import Feed, Heartbeat, Notice, Turns


def turns(**settings: Any) -> Turns:
    config = GatewaySettings(dev_api_key=SecretStr("k" * 20), **settings)
    return Turns(
        settings=config,
        topology=None,
        history=None,
        replay=None,
        slots=None,  # type: ignore[arg-type]
        cancellations=None,
        publish_channel=None,
        reply_queue="q",  # type: ignore[arg-type]
    )


def frame(seq: int, **kind: Any) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(response_id="r", conversation_id="c", seq=seq, **kind)


def delta(seq: int, text: str) -> chat_pb2.StreamEvent:
    return frame(seq, delta=chat_pb2.StreamDelta(text=text))


async def relay(t: Turns, frames: list[chat_pb2.StreamEvent], after: int = 0) -> list[Any]:
    feed = Feed(asyncio.Queue())
    for f in frames:
        feed.queue.put_nowait(f)
    return [item async for item in t._relay(feed, "r", "c", after)]


async def test_the_first_delta_goes_at_once_later_ones_are_merged() -> None:
    frames = [
        frame(1, meta=chat_pb2.StreamMeta(model="m")),
        delta(2, "Hel"),
        delta(3, "lo"),
        delta(4, " wor"),
        delta(5, "ld"),
        frame(6, done=chat_pb2.StreamDone(finish_reason="stop")),
    ]
    out = await relay(turns(coalesce_ms=50), frames)
    kinds = [(o.WhichOneof("kind"), o.seq) for o in out]
    assert kinds == [("meta", 1), ("delta", 2), ("delta", 5), ("done", 6)]
    assert out[1].delta.text == "Hel" and out[2].delta.text == "lo world"


async def test_without_coalescing_every_delta_is_its_own_event() -> None:
    frames = [delta(1, "a"), delta(2, "b"), delta(3, "c"), frame(4, done=chat_pb2.StreamDone())]
    out = await relay(turns(coalesce_ms=0), frames)
    assert [o.seq for o in out] == [1, 2, 3, 4]


async def test_the_byte_limit_flushes_a_merged_delta_early() -> None:
    frames = [delta(1, "x"), *[delta(i, "y" * 10) for i in range(2, 12)], frame(12, done=chat_pb2.StreamDone())]
    out = await relay(turns(coalesce_ms=1000, coalesce_max_bytes=30), frames)
    texts = [o.delta.text for o in out if o.WhichOneof("kind") == "delta"]
    assert texts[0] == "x" and all(len(t) >= 30 for t in texts[1:-1])
    assert "".join(texts) == "x" + "y" * 100


async def test_frames_the_client_has_are_dropped_and_the_stream_ends_on_error() -> None:
    frames = [
        delta(3, "old"),
        delta(5, "new"),
        delta(5, "dup"),
        frame(6, error=chat_pb2.StreamError(code="x", message="m")),
        delta(7, "late"),
    ]
    out = await relay(turns(coalesce_ms=0), frames, after=4)
    assert [(o.seq, o.WhichOneof("kind")) for o in out] == [(5, "delta"), (6, "error")]


async def test_silence_gives_heartbeats_then_a_timeout_notice() -> None:
    out = await relay(turns(heartbeat_s=0.05, stream_idle_timeout_s=0.2), [])
    assert isinstance(out[0], Heartbeat)
    assert isinstance(out[-1], Notice) and out[-1].code == "stream_timeout"
