"""A small SSE reader for the tests: parses frames exactly as a browser's EventSource would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class Frame:
    event: str
    data: dict[str, Any]
    id: int | None


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    event, data, frame_id = "message", [], None
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Frame(event, json.loads("\n".join(data)), frame_id)
            event, data, frame_id = "message", [], None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                frame_id = int(value)


async def read_all(response: httpx.Response) -> list[Frame]:
    """Every frame up to and including `done` or `error`."""
    out = []
    async for frame in frames(response):
        out.append(frame)
        if frame.event in ("done", "error"):
            break
    return out


def text_of(frames_: list[Frame]) -> str:
    return "".join(f.data["text"] for f in frames_ if f.event == "delta")
