"""The relay: one client's frames, from its feed to its connection.

`relay` is a pure async generator over a `Feed` (it touches nothing but the feed and the
metrics), for a live turn and a resumed one alike. It

- coalesces deltas: the first goes at once, later ones are merged for `coalesce_s` or until
  `coalesce_max_bytes`;
- drops frames the client already has (at or before `after_seq`, or repeated);
- sends a heartbeat after `heartbeat_s` without bytes to the client, and ends with a
  `stream_timeout` notice after `stream_idle_timeout_s` without a frame from the backend (a
  `queued` frame extends that by the wait it announces);
- ends with a notice on shutdown, an unreadable or trimmed replay log, and ends silently when
  the client is gone or the answer ended before the frame it resumed after;
- hands a live feed that fell behind (or missed a frame) to the replay log through
  `continue_from_log`, and ends after the answer's last frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.messaging.replay import is_terminal
from parley_common.observability.metrics import ACTIVE_STREAMS, TIME_TO_FIRST_TOKEN

from ..settings import GatewaySettings
from .feed import HEARTBEAT_ITEM, WAKE, Ended, Feed, Gone, LogUnavailable, Notice, Out, Shutdown, Truncated, Wake


@dataclass(frozen=True)
class RelayTiming:
    heartbeat_s: float
    stream_idle_timeout_s: float
    # Deltas after the first are merged for this long (0: each delta is its own event)...
    coalesce_s: float
    # ...or until their text is this large.
    coalesce_max_bytes: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> RelayTiming:
        return cls(
            heartbeat_s=settings.heartbeat_s,
            stream_idle_timeout_s=settings.stream_idle_timeout_s,
            coalesce_s=settings.coalesce_ms / 1000,
            coalesce_max_bytes=settings.coalesce_max_bytes,
        )


async def relay(
    feed: Feed,
    timing: RelayTiming,
    response_id: str,
    conversation_id: str,
    after_seq: int,
    *,
    continue_from_log: Callable[[int], None],
) -> AsyncIterator[Out]:
    """What the client is sent of the frames in `feed` after frame `after_seq` (see the module).

    `continue_from_log(seq)` is called once when a live feed falls behind: from then on the
    feed is filled with the frames after `seq` from the replay log (`feed.live` is then False).
    The feed's tasks are cancelled when the relay ends."""
    ACTIVE_STREAMS.inc()
    measure_first_token = feed.live
    model = ""
    last = after_seq
    now = time.monotonic()
    idle_since = now  # last frame from the backend
    quiet_since = now  # last bytes to the client
    pending: chat_pb2.StreamEvent | None = None  # deltas held for coalescing
    pending_bytes = 0  # the UTF-8 length of its text
    flush_at = 0.0
    coalesce_s = timing.coalesce_s
    sent_delta = False
    loop = asyncio.get_running_loop()
    alarm: asyncio.TimerHandle | None = None
    alarm_at = 0.0

    def ring() -> None:
        nonlocal alarm
        alarm = None
        # A full feed has frames to read first; the deadline is looked at after each.
        with contextlib.suppress(asyncio.QueueFull):
            feed.queue.put_nowait(WAKE)

    try:
        while True:
            if feed.live and feed.lagging and feed.queue.empty():
                # The client fell behind the live queue: continue from the replay log.
                feed.live = False
                continue_from_log(pending.seq if pending else last)
            now = time.monotonic()
            wait = timing.heartbeat_s - (now - quiet_since)
            if pending is not None:
                wait = min(wait, flush_at - now)
            try:
                if wait <= 0:
                    async with asyncio.timeout(0):
                        item = await feed.queue.get()
                elif feed.queue.empty():
                    # One timer wakes the relay at its next deadline (`WAKE` in its feed), armed
                    # again only for a sooner one: not a timeout armed and cancelled per frame.
                    if alarm is None or now + wait < alarm_at:
                        if alarm is not None:
                            alarm.cancel()
                        alarm, alarm_at = loop.call_later(wait, ring), now + wait
                    item = await feed.queue.get()
                else:
                    # A frame is waiting already.
                    item = feed.queue.get_nowait()
            except TimeoutError:
                now = time.monotonic()
                if pending is not None and now >= flush_at:
                    yield pending
                    last, pending, quiet_since = pending.seq, None, now
                    continue
                if now - idle_since >= timing.stream_idle_timeout_s:
                    if pending is not None:
                        yield pending
                    yield Notice(
                        response_id,
                        conversation_id,
                        "stream_timeout",
                        "no answer from the backend in time; resume or send again",
                    )
                    return
                if now - quiet_since >= timing.heartbeat_s:
                    yield HEARTBEAT_ITEM
                    quiet_since = now
                continue
            if isinstance(item, Gone):
                return
            if isinstance(item, Wake):
                continue
            if isinstance(item, Ended):
                if pending is not None:
                    yield pending
                return
            if isinstance(item, LogUnavailable):
                if pending is not None:
                    yield pending
                yield Notice(
                    response_id,
                    conversation_id,
                    "replay_unavailable",
                    "the stream cannot be read right now; resume with Last-Event-ID shortly",
                )
                return
            if isinstance(item, Truncated):
                if pending is not None:
                    yield pending
                yield Notice(
                    response_id,
                    conversation_id,
                    "replay_truncated",
                    f"frames {item.after_seq + 1} to {item.oldest_seq - 1} of this response are no longer kept, "
                    f"so it cannot be resumed after frame {item.after_seq}; "
                    "the answer is stored in the conversation's history when it ends",
                    retryable=False,
                )
                return
            if isinstance(item, Shutdown):
                if pending is not None:
                    yield pending
                yield Notice(
                    response_id,
                    conversation_id,
                    "gateway_shutdown",
                    "this gateway is restarting; resume with Last-Event-ID",
                )
                return
            held = pending.seq if pending is not None else last
            if item.seq <= held:
                continue  # the client has it already
            if feed.live and item.seq > held + 1:
                # A frame never reached this gateway's reply queue (frames are unconfirmed:
                # one published while the broker failed over can be lost). The replay log
                # has every frame: go on from there, past the live frames already queued.
                feed.lagging = True
                continue
            idle_since = time.monotonic()
            kind = item.WhichOneof("kind")
            if kind == "queued":
                # A queued turn is alive for as long as the queue said it would wait: the
                # idle timeout counts from then (the queue also refreshes its frame).
                idle_since += item.queued.estimated_wait_ms / 1000
            conversation_id = conversation_id or item.conversation_id
            if kind == "delta" and sent_delta and coalesce_s > 0:
                text = item.delta.text
                if pending is None:
                    # The frame itself (each is this feed's alone), its text grown by the next ones.
                    pending, pending_bytes = item, len(text.encode())
                    flush_at = idle_since + coalesce_s
                else:
                    pending.delta.text += text
                    pending.seq = item.seq
                    pending_bytes += len(text.encode())
                if pending_bytes >= timing.coalesce_max_bytes:
                    yield pending
                    last, pending, quiet_since = pending.seq, None, time.monotonic()
                continue
            if pending is not None:
                yield pending
                last, pending = pending.seq, None
            last = item.seq
            if kind == "meta":
                model = item.meta.model
            elif kind == "delta" and measure_first_token and not sent_delta:
                TIME_TO_FIRST_TOKEN.labels(model).observe(time.monotonic() - feed.created)
            sent_delta = sent_delta or kind == "delta"
            yield item
            quiet_since = time.monotonic()
            if is_terminal(item):
                return
    finally:
        if alarm is not None:
            alarm.cancel()
        ACTIVE_STREAMS.dec()
        for task in feed.tasks:
            task.cancel()
