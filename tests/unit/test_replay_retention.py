"""The replay log on a real Redis: retention from settings, a shorter life once an answer ended,
and resumes that cannot be served in full (trimmed frames) or start before the first frame."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.messaging.replay import ReplayLog, ResponseStream
from parley_common.settings import CommonSettings
from parley_gateway.settings import GatewaySettings
from parley_gateway.turns.feed import Heartbeat, Notice
from parley_gateway.turns.live import LiveStreams
from parley_gateway.turns.responses import Responses


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
async def cleanup(redis: Redis, namespace: str) -> AsyncIterator[None]:
    yield
    keys = [key async for key in redis.scan_iter(match=f"{namespace}:*")]
    if keys:
        await redis.delete(*keys)


def frame(seq: int, **kind: Any) -> chat_pb2.StreamEvent:
    return chat_pb2.StreamEvent(response_id="r1", conversation_id="c1", seq=seq, **kind)


def delta(seq: int) -> chat_pb2.StreamEvent:
    return frame(seq, delta=chat_pb2.StreamDelta(text=f"t{seq} "))


def done(seq: int) -> chat_pb2.StreamEvent:
    return frame(seq, done=chat_pb2.StreamDone(finish_reason="stop"))


def gateway(replay: ReplayLog, **settings: Any) -> Responses:
    config = GatewaySettings(dev_api_key=SecretStr("k" * 20), **settings)
    return Responses(
        replay=replay,
        slots=StreamSlots(replay.redis, replay.namespace, limit=10),
        streams=LiveStreams(config, replay),
        cancellations=None,  # type: ignore[arg-type]
    )


async def events(responses: Responses, user: str, after: int) -> list[Any]:
    stream = await responses.resume(user, "r1", after)
    assert stream is not None
    return [item async for item in stream.events]


def test_retention_comes_from_settings_with_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = CommonSettings()
    assert (defaults.replay_ttl_s, defaults.replay_finished_ttl_s, defaults.replay_max_frames) == (3600, 900, 50_000)
    monkeypatch.setenv("PARLEY_REPLAY_TTL_S", "7200")
    monkeypatch.setenv("PARLEY_REPLAY_FINISHED_TTL_S", "600")
    monkeypatch.setenv("PARLEY_REPLAY_MAX_FRAMES", "1000")
    log = ReplayLog.from_settings(None, CommonSettings())  # type: ignore[arg-type]
    assert (log.ttl_s, log.finished_ttl_s, log.max_frames) == (7200, 600, 1000)
    monkeypatch.setenv("PARLEY_REPLAY_FINISHED_TTL_S", "9000")
    with pytest.raises(ValidationError, match="PARLEY_REPLAY_FINISHED_TTL_S is longer than PARLEY_REPLAY_TTL_S"):
        CommonSettings()
    monkeypatch.setenv("PARLEY_REPLAY_FINISHED_TTL_S", "600")
    monkeypatch.setenv("PARLEY_REPLAY_MAX_FRAMES", "5")
    with pytest.raises(ValidationError):
        CommonSettings()


@pytest.mark.usefixtures("cleanup")
async def test_a_finished_answer_is_kept_only_the_finished_ttl(redis: Redis, namespace: str) -> None:
    log = ReplayLog(redis, namespace, ttl_s=3600, finished_ttl_s=120)
    assert await log.claim("r1", "alice", "c1")
    for seq in (1, 2):
        await log.append(delta(seq))
    assert 3500 < await redis.ttl(log.key("r1")) <= 3600
    assert 3500 < await redis.ttl(log.owner_key("r1")) <= 3600
    await log.append(done(3))
    # The log and its owner record go together: a resume then gets 404, never an empty stream.
    assert 0 < await redis.ttl(log.key("r1")) <= 120
    assert 0 < await redis.ttl(log.owner_key("r1")) <= 120
    assert [f.seq for f in await log.read_after("r1", 0)] == [1, 2, 3]
    assert await log.owner_record("r1") == ("alice", "c1")


@pytest.mark.usefixtures("cleanup")
async def test_frames_appended_together_are_kept_in_order_and_a_last_done_ends_the_log(
    redis: Redis, namespace: str
) -> None:
    log = ReplayLog(redis, namespace, ttl_s=3600, finished_ttl_s=120)
    assert await log.claim("r1", "alice", "c1")
    await log.append_many([delta(1), delta(2)])
    assert 3500 < await redis.ttl(log.key("r1")) <= 3600
    await log.append_many([delta(3), done(4)])
    assert 0 < await redis.ttl(log.key("r1")) <= 120
    assert 0 < await redis.ttl(log.owner_key("r1")) <= 120
    assert [f.seq for f in await log.read_after("r1", 0)] == [1, 2, 3, 4]


class RecordingExchange:
    def __init__(self) -> None:
        self.published: list[tuple[str, chat_pb2.StreamEvent]] = []

    async def publish(self, message: Any, routing_key: str, mandatory: bool) -> None:
        self.published.append((routing_key, chat_pb2.StreamEvent.FromString(message.body)))


class RecordingChannel:
    def __init__(self) -> None:
        self.default_exchange = RecordingExchange()


@pytest.mark.usefixtures("cleanup")
async def test_frames_emitted_together_are_numbered_logged_and_published_as_one_at_a_time(
    redis: Redis, namespace: str
) -> None:
    log = ReplayLog(redis, namespace)
    channel = RecordingChannel()
    stream = ResponseStream(channel=channel, replay=log, response_id="r1", conversation_id="c1", reply_to="q")  # type: ignore[arg-type]
    await stream.emit(meta=chat_pb2.StreamMeta(model="m"))
    sent = await stream.emit_many({"delta": chat_pb2.StreamDelta(text="a")}, {"delta": chat_pb2.StreamDelta(text="b")})
    assert [f.seq for f in sent] == [2, 3]
    with pytest.raises(RuntimeError):
        # Nothing may follow the last frame, even in the same batch: nothing of it is sent.
        await stream.emit_many({"done": chat_pb2.StreamDone(finish_reason="stop")}, {"usage": chat_pb2.Usage()})
    assert not stream.closed
    await stream.emit_many({"usage": chat_pb2.Usage(output_tokens=2)}, {"done": chat_pb2.StreamDone()})
    assert stream.closed and await stream.emit_many() == []
    logged = await log.read_after("r1", 0)
    kinds = ["meta", "delta", "delta", "usage", "done"]
    assert [(f.seq, f.WhichOneof("kind")) for f in logged] == list(zip(range(1, 6), kinds, strict=True))
    assert [(q, f) for q, f in channel.default_exchange.published] == [("q", f) for f in logged]


@pytest.mark.usefixtures("cleanup")
async def test_the_log_keeps_at_most_max_frames(redis: Redis, namespace: str) -> None:
    log = ReplayLog(redis, namespace, max_frames=100)
    for seq in range(1, 1001):
        await log.append(delta(seq))
    kept = await log.read_after("r1", 0)
    # Trimming is approximate (whole stream nodes): at least max_frames, far fewer than all.
    assert 100 <= len(kept) < 1000 and kept[-1].seq == 1000


@pytest.mark.usefixtures("cleanup")
async def test_a_resume_from_before_the_oldest_kept_frame_ends_with_replay_truncated(
    redis: Redis, namespace: str
) -> None:
    log = ReplayLog(redis, namespace, max_frames=100)
    assert await log.claim("r1", "alice", "c1")
    for seq in range(1, 1000):
        await log.append(delta(seq))
    await log.append(done(1000))
    oldest = (await log.read_after("r1", 0))[0].seq
    assert oldest > 2
    responses = gateway(log, coalesce_ms=0)

    out = await events(responses, "alice", 1)
    assert len(out) == 1 and isinstance(out[0], Notice)
    assert out[0].code == "replay_truncated" and out[0].retryable is False
    assert out[0].conversation_id == "c1" and f"frames 2 to {oldest - 1}" in out[0].message

    # From the frame before the oldest kept one, nothing is missing: every frame, then done.
    out = await events(responses, "alice", oldest - 1)
    assert [o.seq for o in out] == list(range(oldest, 1001)) and out[-1].WhichOneof("kind") == "done"


@pytest.mark.usefixtures("cleanup")
async def test_a_gap_met_while_following_the_live_log_ends_the_stream(redis: Redis, namespace: str) -> None:
    log = ReplayLog(redis, namespace)
    assert await log.claim("r1", "alice", "c1")
    await log.append(delta(1))
    await log.append(delta(2))
    responses = gateway(log, coalesce_ms=0, heartbeat_s=0.2, stream_idle_timeout_s=30)
    stream = (await responses.resume("alice", "r1", 0)).events
    assert [(await anext(stream)).seq for _ in range(2)] == [1, 2]  # type: ignore[union-attr]
    await log.append(delta(5))  # frames 3 and 4 never reached the log
    rest = [item async for item in stream]
    notices = [item for item in rest if isinstance(item, Notice)]
    assert [n.code for n in notices] == ["replay_truncated"] and "frames 3 to 4" in notices[0].message


@pytest.mark.usefixtures("cleanup")
async def test_a_resumed_stream_names_its_conversation_before_the_first_frame(redis: Redis, namespace: str) -> None:
    log = ReplayLog(redis, namespace)
    assert await log.claim("r1", "alice", "c-42")
    responses = gateway(log, heartbeat_s=0.05, stream_idle_timeout_s=0.2)
    stream = await responses.resume("alice", "r1", 0)
    assert stream.conversation_id == "c-42"
    out = [item async for item in stream.events]
    assert isinstance(out[-1], Notice) and out[-1].code == "stream_timeout"
    assert out[-1].conversation_id == "c-42"


@pytest.mark.usefixtures("cleanup")
async def test_owner_records_written_before_the_upgrade_still_resolve(redis: Redis, namespace: str) -> None:
    log = ReplayLog(redis, namespace)
    await redis.set(log.owner_key("r1"), "alice", ex=60)  # the old form: the user id alone
    assert await log.owner_record("r1") == ("alice", "")
    assert await log.owner("r1") == "alice"
    assert await log.owner_record("nothing") is None


@pytest.mark.usefixtures("cleanup")
async def test_a_resume_after_the_last_frame_of_an_ended_answer_has_nothing_to_stream(
    redis: Redis, namespace: str
) -> None:
    log = ReplayLog(redis, namespace)
    assert await log.claim("r1", "alice", "c1")
    await log.append(delta(1))
    await log.append(done(2))
    responses = gateway(log, coalesce_ms=0, heartbeat_s=0.05, stream_idle_timeout_s=30)
    assert await responses.resume("alice", "r1", 2) is None
    assert await responses.resume("alice", "r1", 9) is None
    assert [o.seq for o in await events(responses, "alice", 1)] == [2]


@pytest.mark.usefixtures("cleanup")
async def test_a_resume_from_ahead_of_the_log_ends_when_the_answer_ends_before_that_frame(
    redis: Redis, namespace: str
) -> None:
    log = ReplayLog(redis, namespace)
    assert await log.claim("r1", "alice", "c1")
    await log.append(delta(1))
    responses = gateway(log, coalesce_ms=0, heartbeat_s=0.05, stream_idle_timeout_s=30)
    # Frame 5 is not in the log (yet): the stream waits for what comes after it...
    stream = await responses.resume("alice", "r1", 5)
    assert stream is not None

    async def finish() -> None:
        await asyncio.sleep(0.2)  # the stream waits a while with nothing to send
        await log.append(delta(2))
        await log.append(done(3))

    ending = asyncio.create_task(finish())
    # ...and when the answer ends before frame 5, nothing will: it closes, with nothing more.
    async with asyncio.timeout(5):
        out = [item async for item in stream.events]
    await ending
    assert [o for o in out if not isinstance(o, Heartbeat)] == []
