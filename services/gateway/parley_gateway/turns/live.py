"""The streams this gateway serves.

A live turn's frames arrive on this gateway's one reply queue (consumed no-ack: the replay log
is the durable copy) and are handed, by response id, to the feed of the turn started here. A
feed that overflows (a slow client), or every feed when the broker connection came back
(frames sent meanwhile never reached the queue), continues from the replay log. Every open
relay is known, so that a stopping gateway gives each its final event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from parley.v1 import chat_pb2
from parley_common.messaging.replay import ReplayLog

from ..settings import GatewaySettings
from .feed import SHUTDOWN, WAKE, Feed, FrameQueue, Out
from .relay import RelayTiming, relay
from .replay_follow import follow_log


class LiveStreams:
    def __init__(self, settings: GatewaySettings, replay: ReplayLog) -> None:
        self.replay = replay
        self.timing = RelayTiming.from_settings(settings)
        self.buffer_frames = settings.live_buffer_frames
        # A replay log follower blocks this long per read: a heartbeat's time.
        self.follow_block_ms = int(settings.heartbeat_s * 1000)
        # Every feed whose relay is running (for the final event on shutdown).
        self.feeds: set[Feed] = set()
        # Live turns started here, by response id: frames arriving on this gateway's reply
        # queue are handed to them.
        self.live: dict[str, Feed] = {}

    def _new_feed(self) -> Feed:
        return Feed(FrameQueue(maxsize=self.buffer_frames))

    def expect(self, response_id: str) -> Feed:
        """The feed of a turn about to be published here: its frames go to it."""
        feed = self._new_feed()
        self.live[response_id] = feed
        return feed

    def forget(self, response_id: str) -> None:
        """The turn will not be published after all."""
        self.live.pop(response_id, None)

    def from_log(self, response_id: str, after_seq: int) -> Feed:
        """A feed of the frames after `after_seq` from the replay log, then its live tail."""
        feed = self._new_feed()
        feed.live = False
        follow_log(feed, self.replay, response_id, after_seq, block_ms=self.follow_block_ms)
        return feed

    def on_frame(self, event: chat_pb2.StreamEvent) -> None:
        """Frames of this gateway's reply queue (consumed no-ack through bus.frames: the replay
        log is the durable copy), handed to the live turn they belong to."""
        feed = self.live.get(event.response_id)
        if feed is None or feed.lagging:
            return
        try:
            feed.queue.put_nowait(event)
        except asyncio.QueueFull:
            feed.lagging = True  # the relay picks up from the replay log

    def on_reconnect(self, *_: object) -> None:
        """The broker connection came back: frames sent meanwhile never reached the reply queue,
        so every live stream continues from the replay log (which has them all)."""
        for feed in list(self.live.values()):
            feed.lagging = True
            try:
                feed.queue.put_nowait(WAKE)
            except asyncio.QueueFull:
                pass  # it has frames to read first; it checks `lagging` when they are done

    def shutdown(self) -> None:
        """Give every open stream its final event."""
        for feed in self.feeds:
            for task in feed.tasks:
                task.cancel()
            feed.put_displacing(SHUTDOWN)

    async def relay(self, feed: Feed, response_id: str, conversation_id: str, after_seq: int) -> AsyncIterator[Out]:
        """The relay of `feed` (turns/relay.py), known to this gateway while it runs."""

        def continue_from_log(seq: int) -> None:
            self.live.pop(response_id, None)
            follow_log(feed, self.replay, response_id, seq, block_ms=self.follow_block_ms)

        self.feeds.add(feed)
        events = relay(feed, self.timing, response_id, conversation_id, after_seq, continue_from_log=continue_from_log)
        try:
            async for item in events:
                yield item
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            self.feeds.discard(feed)
            if self.live.get(response_id) is feed:
                del self.live[response_id]
