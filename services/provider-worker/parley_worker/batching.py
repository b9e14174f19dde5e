"""Merging provider tokens into fewer frames when they come fast.

Every frame costs a Redis write and a broker publish; a provider streaming hundreds of tokens
a second would spend most of the worker's CPU on frames. The first token of an answer goes
out at once (time to first token is what users feel); after it, text is held at most
`window_s` (or until `max_chars` wait) and sent as one delta. A slow provider, one token per
window or slower, sees every token go out as it comes.

Frames that are ready together go out together (`ResponseStream.emit_many`: one replay-log
round trip): the answer's meta frame with its first text (`lead`), and the text still held
with the frames that end the answer (`close(usage, done)`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from parley.v1 import chat_pb2
from parley_common.messaging.replay import ResponseStream


class DeltaBatcher:
    def __init__(self, stream: ResponseStream, window_s: float, max_chars: int = 2048) -> None:
        self.stream = stream
        self.window_s = window_s
        self.max_chars = max_chars
        self._held: list[str] = []
        self._held_chars = 0
        self._timer: asyncio.Task[None] | None = None
        self._sent_first = False
        self._lead: list[dict[str, Any]] = []

    def lead(self, **frame: Any) -> None:
        """A frame to send just before the next text (e.g. the meta frame that the first text
        chunk made known): both go out in one write. Call `add` next."""
        self._lead.append(frame)

    async def add(self, text: str) -> None:
        if not self._sent_first or self.window_s <= 0:
            self._sent_first = True
            lead, self._lead = self._lead, []
            await self._send([*lead, {"delta": chat_pb2.StreamDelta(text=text)}])
            return
        if self._lead:
            lead, self._lead = self._lead, []
            await self._send(lead)
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

    async def flush(self, *then: dict[str, Any]) -> None:
        """Send what is held now (and the frames `then` after it, in the same write)."""
        if self._timer is not None and self._timer is not asyncio.current_task():
            self._timer.cancel()
            self._timer = None
        frames, self._lead = self._lead, []
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self._held_chars = 0
            frames.append({"delta": chat_pb2.StreamDelta(text=text)})
        await self._send([*frames, *then])

    async def _send(self, frames: list[dict[str, Any]]) -> None:
        if len(frames) == 1:
            await self.stream.emit(**frames[0])
        elif frames:
            await self.stream.emit_many(*frames)

    async def close(self, *then: dict[str, Any]) -> None:
        """Send what is held and stop the timer, before the stream's last frames; `then`: those
        frames (e.g. `{"usage": ...}, {"done": ...}`), sent in the same write."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self.flush(*then)
