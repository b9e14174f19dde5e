"""The replay log and the emitter of response streams.

Every frame of a response goes two ways: to the request's reply queue (the live stream the
gateway that took the request is reading) and to a Redis Stream per response (the replay
log), so that any gateway can serve a client that reconnects with `Last-Event-ID`.
The Redis entry id of a frame is `0-<seq>`, so "after Last-Event-ID" is an exclusive range.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel
from aiormq.abc import ChannelFrame
from pamqp.header import ContentHeader
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import envelope
from parley_common.messaging.topology import SCHEMA_VERSION, STREAM_EVENT
from parley_common.settings import CommonSettings

log = logging.getLogger(__name__)

TERMINAL_KINDS = frozenset({"done", "error"})
# How often, at most, a stream renews its replay log's life while it writes (seconds).
RENEW_S = 60.0


def latest_turn_key(namespace: str, conversation_id: str) -> str:
    """The Redis key holding the response id of a conversation's latest turn: written by the
    orchestrator's turn order, read by the gateway to tell whether an answer still streams."""
    return f"{namespace}:conversation-turn:{conversation_id}"


def is_terminal(event: chat_pb2.StreamEvent) -> bool:
    return event.WhichOneof("kind") in TERMINAL_KINDS


class ReplayLog:
    """A bounded, expiring Redis Stream of one response's frames, and the response's owner.

    While the answer is being generated, the log is kept `ttl_s` after its newest frame (a
    ResponseStream renews that at most every `RENEW_S`: up to that much less); once
    its terminal frame (done/error) is in, the log and the owner record are kept only
    `finished_ttl_s` more: long enough to resume a finished answer. At most `max_frames` are
    kept (older ones are trimmed; frame numbers stay contiguous, so a gap shows a trim).
    """

    def __init__(
        self,
        redis: Redis,
        namespace: str,
        ttl_s: int = 3600,
        max_frames: int = 50_000,
        follower: Redis | None = None,
        finished_ttl_s: int = 900,
    ) -> None:
        self.redis = redis
        # Blocking reads (follow) use their own client, so they never starve short commands.
        self.follower = follower or redis
        self.namespace = namespace
        self.ttl_s = ttl_s
        self.finished_ttl_s = min(finished_ttl_s, ttl_s)
        self.max_frames = max_frames

    @classmethod
    def from_settings(cls, redis: Redis, settings: CommonSettings, follower: Redis | None = None) -> ReplayLog:
        """The log with the retention of PARLEY_REPLAY_TTL_S, _FINISHED_TTL_S and _MAX_FRAMES."""
        return cls(
            redis,
            settings.namespace,
            ttl_s=settings.replay_ttl_s,
            max_frames=settings.replay_max_frames,
            follower=follower,
            finished_ttl_s=settings.replay_finished_ttl_s,
        )

    def key(self, response_id: str) -> str:
        return f"{self.namespace}:replay:{response_id}"

    def owner_key(self, response_id: str) -> str:
        return f"{self.namespace}:response-owner:{response_id}"

    async def claim(self, response_id: str, user_id: str, conversation_id: str = "") -> bool:
        """Record who owns a response (and its conversation, "" for none); False when it was
        claimed before (a repeated request)."""
        record = json.dumps([user_id, conversation_id])
        return bool(await self.redis.set(self.owner_key(response_id), record, ex=self.ttl_s, nx=True))

    async def release(self, response_id: str) -> None:
        await self.redis.delete(self.owner_key(response_id))

    async def owner_record(self, response_id: str) -> tuple[str, str] | None:
        """(user id, conversation id) of a response, or None when it is unknown (or expired)."""
        value = await self.redis.get(self.owner_key(response_id))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if isinstance(record, list) and len(record) == 2 and all(isinstance(v, str) for v in record):
            return record[0], record[1]
        return text, ""  # a record written before conversation ids were kept: the user id alone

    async def owner(self, response_id: str) -> str | None:
        record = await self.owner_record(response_id)
        return record[0] if record is not None else None

    async def append(self, event: chat_pb2.StreamEvent) -> None:
        await self.append_many([event])

    async def append_many(self, events: list[chat_pb2.StreamEvent]) -> None:
        """Append frames of one response, in order, in one round trip (only the last may be
        terminal)."""
        if not events:
            return
        await self._append(events, [event.SerializeToString() for event in events])

    async def _append(self, events: list[chat_pb2.StreamEvent], bodies: list[bytes], refresh: bool = True) -> None:
        """`append_many`, the frames already serialised (`bodies`, one per event); without
        `refresh`, the log's life is not renewed (unless the last frame is terminal)."""
        last = events[-1]
        key = self.key(last.response_id)
        terminal = is_terminal(last)
        if not refresh and not terminal and len(events) == 1:
            # One frame alone: one command, no pipeline.
            await self.redis.xadd(key, {"e": bodies[0]}, id=f"0-{last.seq}", maxlen=self.max_frames)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for event, body in zip(events, bodies, strict=True):
                pipe.xadd(key, {"e": body}, id=f"0-{event.seq}", maxlen=self.max_frames)
            if terminal:
                # Finished: kept only long enough to resume; the owner record goes with it, so a
                # response is never known to have an owner but no frames.
                pipe.expire(key, self.finished_ttl_s)
                pipe.expire(self.owner_key(last.response_id), self.finished_ttl_s)
            elif refresh:
                pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def last_seq(self, response_id: str) -> int:
        """The number of the newest frame in the log (0 when there is none)."""
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.key(response_id), count=1
        )
        if not rows:
            return 0
        return int(rows[0][0].decode().split("-")[1])

    async def last_frame(self, response_id: str) -> chat_pb2.StreamEvent | None:
        """The newest frame in the log (None when there is none)."""
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrevrange(  # type: ignore[assignment]
            self.key(response_id), count=1
        )
        return _decode(rows[0][1]) if rows else None

    async def ended_by(self, response_id: str, seq: int) -> bool:
        """True when the response's terminal frame is in the log and numbered `seq` or lower: a
        client that has frame `seq` has had the whole stream."""
        last = await self.last_frame(response_id)
        return last is not None and is_terminal(last) and last.seq <= seq

    async def finished(self, response_id: str) -> bool:
        """True when the response's last frame is terminal, or nothing is known of it any more."""
        last = await self.last_frame(response_id)
        if last is not None:
            return is_terminal(last)
        return not await self.redis.exists(self.owner_key(response_id))

    async def read_after(self, response_id: str, after_seq: int) -> list[chat_pb2.StreamEvent]:
        rows = await self.redis.xrange(self.key(response_id), min=f"(0-{after_seq}", max="+")
        return decode_rows(rows)

    def queue_read_after(self, pipe: Pipeline, response_id: str, after_seq: int) -> None:
        """`read_after` as one command of the caller's pipeline: its result goes to `decode_rows`."""
        pipe.xrange(self.key(response_id), min=f"(0-{after_seq}", max="+")

    async def follow(
        self, response_id: str, after_seq: int, block_ms: int = 15_000
    ) -> AsyncIterator[chat_pb2.StreamEvent | None]:
        """Yield frames after `after_seq` as they arrive; yields None after each idle `block_ms`."""
        key = self.key(response_id)
        last = f"0-{after_seq}"
        while True:
            result: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = await self.follower.xread(  # type: ignore[assignment]
                {key: last}, block=block_ms, count=500
            )
            if not result:
                yield None
                continue
            for entry_id, fields in result[0][1]:
                last = entry_id.decode()
                yield _decode(fields)


def decode_rows(rows: Any) -> list[chat_pb2.StreamEvent]:
    """The frames of an XRANGE reply on a replay log."""
    return [_decode(fields) for _, fields in rows]


def _decode(fields: dict[bytes, bytes]) -> chat_pb2.StreamEvent:
    event = chat_pb2.StreamEvent()
    event.ParseFromString(fields[b"e"])
    return event


class ResponseStream:
    """Emits the frames of one response to its reply queue and replay log.

    Frames are numbered on from the newest one already in the log, so the orchestrator (which
    may send `queued` frames) and the worker that streams the answer continue one sequence.
    """

    def __init__(
        self,
        *,
        channel: AbstractChannel,
        replay: ReplayLog,
        response_id: str,
        conversation_id: str,
        reply_to: str,
    ) -> None:
        self.channel = channel
        self.replay = replay
        self.response_id = response_id
        self.conversation_id = conversation_id
        self.reply_to = reply_to
        self.seq: int | None = None
        self.closed = False
        self.log_lost = False
        # When this stream last renewed its log's life (monotonic; None: not yet).
        self._renewed_at: float | None = None
        # Frames are written one at a time: the log only accepts ids in increasing order.
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self.seq is not None

    def continue_after(self, seq: int) -> None:
        """Number the next frame after `seq`, the newest frame the caller has read from the log
        (saves asking the log again; only for a caller that alone writes this stream now)."""
        if self.seq is None:
            self.seq = seq

    async def emit(self, **kind: Any) -> chat_pb2.StreamEvent:
        """Send one frame, e.g. `emit(delta=chat_pb2.StreamDelta(text="Hi"))`."""
        async with self._lock:
            return (await self._emit([kind]))[0]

    async def emit_many(self, *kinds: dict[str, Any]) -> list[chat_pb2.StreamEvent]:
        """Send several frames that are ready at once, in order, e.g.
        `emit_many({"usage": usage}, {"done": done})`: one replay-log round trip for all of
        them, then their publishes; the same frames, numbers and order as one `emit` each."""
        if not kinds:
            return []
        async with self._lock:
            return await self._emit(list(kinds))

    async def _emit(self, kinds: list[dict[str, Any]]) -> list[chat_pb2.StreamEvent]:
        if self.closed:
            raise RuntimeError("stream already ended")
        if self.seq is None:
            self.seq = await self.replay.last_seq(self.response_id)
        events = [
            chat_pb2.StreamEvent(
                response_id=self.response_id, conversation_id=self.conversation_id, seq=self.seq + i, **kind
            )
            for i, kind in enumerate(kinds, 1)
        ]
        if any(is_terminal(event) for event in events[:-1]):
            raise RuntimeError("a frame after the stream's last one")
        self.seq += len(events)
        self.closed = is_terminal(events[-1])
        # Serialised once: the same bytes go to the log and to the reply queue.
        bodies = [event.SerializeToString() for event in events]
        # The log's life is renewed by a stream's first write, then at most every RENEW_S (an
        # EXPIRE with every frame of a long answer would be most of its Redis commands).
        now = time.monotonic()
        renew = self._renewed_at is None or now - self._renewed_at >= min(RENEW_S, self.replay.ttl_s / 4)
        # The log first: a frame a client saw live is always in the log for a resume.
        try:
            await self.replay._append(events, bodies, renew)
            if renew:
                self._renewed_at = now
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # Redis is down: the live stream goes on; only a resume of this stream may miss frames.
            if not self.log_lost:
                log.warning(
                    "replay log unavailable; streaming live only",
                    extra={"response_id": self.response_id, "error": str(exc)},
                )
            self.log_lost = True
            self._renewed_at = None  # the next write renews it, in case the log was lost with Redis
        if self.reply_to:
            # mandatory=False: the reply queue is gone when its client left; the log still has it.
            underlay = await _frame_channel(self.channel)
            if underlay is not None:
                await _publish_frames(underlay, self.reply_to, self.response_id, events, bodies)
            else:
                for event in events:
                    await self.channel.default_exchange.publish(
                        envelope(
                            event,
                            message_type=STREAM_EVENT,
                            idempotency_key=f"{self.response_id}:{event.seq}",
                            persistent=False,
                            traced=False,
                        ),
                        routing_key=self.reply_to,
                        mandatory=False,
                    )
        return events

    async def fail(self, code: str, message: str, retryable: bool) -> None:
        if not self.closed:
            await self.emit(error=chat_pb2.StreamError(code=code, message=message, retryable=retryable))


async def _frame_channel(channel: AbstractChannel) -> aiormq.Channel | None:
    """The aiormq channel under `channel` when frames can be written to it directly (an
    unconfirmed aio-pika channel), else None: they go through aio-pika's publish."""
    underlay_of = getattr(channel, "get_underlay_channel", None)
    if underlay_of is None:
        return None
    underlay = await underlay_of()
    if not isinstance(underlay, aiormq.Channel) or underlay.publisher_confirms:
        return None
    return underlay


async def _publish_frames(
    channel: aiormq.Channel,
    reply_to: str,
    response_id: str,
    events: list[chat_pb2.StreamEvent],
    bodies: list[bytes],
) -> None:
    """Publish frames to a reply queue, one message each, as `envelope(..., persistent=False,
    traced=False)` makes them (the same properties), in one write to the broker's socket.

    aio-pika's publish costs a Message, a properties object, a queued write of its own and a
    wait for it per frame; the frames of one batch (the meta frame with the first text, the
    last text with usage and done) leave here together, as AMQP allows: each message's method,
    header and body frames back to back. The channel's lock keeps them whole among its other
    publishes; its future store fails the wait when the channel closes (as aiormq's own
    publish does)."""
    timestamp = datetime.now(tz=UTC)
    frames: list[Any] = []
    for event, body in zip(events, bodies, strict=True):
        key = f"{response_id}:{event.seq}"
        properties = aiormq.spec.Basic.Properties(
            content_type="application/x-protobuf",
            delivery_mode=1,  # not persistent: the replay log is the durable copy
            headers={"x-schema-version": SCHEMA_VERSION, "x-idempotency-key": key},
            message_id=key,
            message_type=STREAM_EVENT,
            timestamp=timestamp,
        )
        frames.append(aiormq.spec.Basic.Publish(exchange="", routing_key=reply_to, mandatory=False))
        frames.append(ContentHeader(properties=properties, body_size=len(body)))
        frames.extend(channel._split_body(body))
    if channel.is_closed:
        raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
    async with channel.lock:
        channel.delivery_tag += len(events)
        written = channel.create_future()
        await channel.write_queue.put(
            ChannelFrame.marshall(channel_number=channel.number, frames=frames, drain_future=written)
        )
    await written


__all__ = ["ReplayLog", "ResponseStream", "decode_rows", "is_terminal"]
