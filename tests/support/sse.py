"""The one SSE reader of the tests, built on the production decoder
(`parley_worker.providers.sse.SSEDecoder`, the WHATWG event-stream rules): it reads bytes, not
lines, so a line ends only at CR, LF or CRLF, as in a browser, never at U+2028 or U+2029 as
with `str.splitlines` (httpx's `aiter_lines`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from parley_worker.providers.sse import ServerSentEvent, SSEDecoder, aiter_sse


@dataclass
class Frame:
    event: str
    data: Any
    # The stream's last event id once this frame has arrived (a browser's `lastEventId`): a
    # frame without an `id:` line of its own keeps the previous one.
    id: int | None


def _frame(event: ServerSentEvent) -> Frame:
    data = event.data if event.data == "[DONE]" else json.loads(event.data)
    return Frame(event.event, data, int(event.id) if event.id else None)


async def frames_of(chunks: AsyncIterable[bytes]) -> AsyncIterator[Frame]:
    """The frames in a byte stream, their data parsed as JSON (the OpenAI stream's `[DONE]`
    stays text); comments (heartbeats) are not frames."""
    async for event in aiter_sse(chunks):
        yield _frame(event)


def parse(wire: bytes) -> list[Frame]:
    """The frames of a whole body (a half-received frame at its end is not one)."""
    return [_frame(event) for event in SSEDecoder().feed(wire)]


def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The frames of a streamed response, as they arrive."""
    return frames_of(response.aiter_bytes())


async def read_all(response: httpx.Response) -> list[Frame]:
    """Every frame up to and including `done` or `error`."""
    out = []
    async for frame in frames(response):
        out.append(frame)
        if frame.event in ("done", "error"):
            break
    return out


def text_of(frames_: list[Frame]) -> str:
    """The answer's text: its `delta` frames joined, or the OpenAI-compatible stream's chunks."""
    text = []
    for frame in frames_:
        if frame.event == "delta":
            text.append(frame.data["text"])
        elif frame.event == "message" and isinstance(frame.data, dict) and frame.data.get("choices"):
            text.append(frame.data["choices"][0]["delta"].get("content") or "")
    return "".join(text)
