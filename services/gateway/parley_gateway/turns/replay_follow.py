"""Following a response's replay log into a feed: every frame after the one a client has,
then the live tail, for a resume (from any gateway) and for a live stream that fell behind.

Frames are numbered without gaps, so a gap means frames were trimmed (or never written while
Redis was down): the feed gets `Truncated` and the stream ends with `replay_truncated`. A log
that cannot be read after a few attempts gives `LOG_UNAVAILABLE`.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from parley_common.messaging.replay import ReplayLog, is_terminal

from .feed import ENDED, LOG_UNAVAILABLE, Feed, Truncated

log = logging.getLogger(__name__)

LOG_READ_ATTEMPTS = 5


def follow_log(feed: Feed, replay: ReplayLog, response_id: str, after_seq: int, *, block_ms: int) -> None:
    """Feed frames after `after_seq` from the replay log, then its live tail, until the answer's
    last frame (a task of the feed's, cancelled when its relay ends)."""

    async def pump() -> None:
        last = after_seq
        for attempt in range(1, LOG_READ_ATTEMPTS + 1):
            try:
                for event in await replay.read_after(response_id, last):
                    if event.seq > last + 1:
                        await feed.queue.put(Truncated(last, event.seq))
                        return
                    await feed.queue.put(event)
                    last = event.seq
                    if is_terminal(event):
                        return
                async for followed in replay.follow(response_id, last, block_ms=block_ms):
                    if followed is None and await replay.ended_by(response_id, last):
                        # The response ended at or before the frame the client named (a
                        # Last-Event-ID ahead of the log when it was asked): nothing more comes.
                        await feed.queue.put(ENDED)
                        return
                    if followed is not None and followed.seq > last + 1:
                        await feed.queue.put(Truncated(last, followed.seq))
                        return
                    if followed is not None and followed.seq > last:
                        await feed.queue.put(followed)
                        last = followed.seq
                        if is_terminal(followed):
                            return
            except RedisError as exc:
                # A broken pooled connection (Redis restarted) fails once, then reconnects.
                log.warning("replay log read failed", extra={"response_id": response_id, "error": str(exc)})
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        await feed.queue.put(LOG_UNAVAILABLE)

    feed.tasks.append(asyncio.create_task(pump()))
