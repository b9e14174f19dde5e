"""Merging provider tokens into fewer frames when they come fast.

Every frame costs a Redis write and a broker publish; a provider streaming hundreds of tokens
a second would spend most of the worker's CPU on frames. The first token of an answer goes
out at once (time to first token is what users feel); after it, text is held at most
`window_s` (or until `max_chars` wait) and sent as one delta. A slow provider, one token per
window or slower, sees every token go out as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib

from parley.v1 import chat_pb2
from parley_common.replay import ResponseStream


class DeltaBatcher:
    def __init__(self, stream: ResponseStream, window_s: float, max_chars: int = 2048) -> None:
        self.stream = stream
        self.window_s = window_s
        self.max_chars = max_chars
        self._held: list[str] = []
        self._held_chars = 0
        self._timer: asyncio.Task[None] | None = None
        self._sent_first = False

    async def add(self, text: str) -> None:
        if not self._sent_first or self.window_s <= 0:
            self._sent_first = True
            await self.stream.emit(delta=chat_pb2.StreamDelta(text=text))
            return
        self._held.append(text)
        self._held_chars += len(text)
        if self._held_chars >= self.max_chars:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window_s)
        self._timer = None
        await self.flush()

    async def flush(self) -> None:
        """Send what is held now."""
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        text = "".join(self._held)
        self._held.clear()
        self._held_chars = 0
        await self.stream.emit(delta=chat_pb2.StreamDelta(text=text))

    async def close(self) -> None:
        """Send what is held and stop the timer (before the stream's last frames)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush()
