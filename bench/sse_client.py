"""A minimal HTTP/1.1 SSE client on raw asyncio streams, so that a thousand open streams cost
the load generator little CPU (the point is to measure the gateway, not the client). Events are
read by the production SSE decoder, as the tests read them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from parley_worker.providers.sse import SSEDecoder


@dataclass
class TurnResult:
    """One chat turn as a client sees it: what came back, and how it ended."""

    status: int = 0
    # The `code` of a JSON error body (status != 200) or of an `error` event.
    error_code: str = ""
    response_id: str = ""
    # Seconds from the start of the request to: the response headers, the first event of any
    # kind (`meta`, from the orchestrator), the first `delta` (from the provider worker).
    headers_s: float | None = None
    first_event_s: float | None = None
    first_delta_s: float | None = None
    # Set when the stream ended with `done` or `error` (None: the connection ended first).
    total_s: float | None = None
    last_event: str = ""
    events: int = 0
    text: list[str] = field(default_factory=list)


async def send_turn(
    host: str, port: int, path: str, token: str, body: dict[str, object], first_delta_only: bool = False
) -> TurnResult:
    """POST a message and read its SSE answer to the end (or only to its first delta, then hang
    up), keeping error codes: a non-200 answer's JSON code, or the `error` event's code."""
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    result = TurnResult()
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            return result
        result.status = int(status_line.split()[1])
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "x-parley-response-id":
                result.response_id = value
        result.headers_s = time.perf_counter() - start
        if result.status != 200:
            async with contextlib.aclosing(_body(reader, chunked)) as pieces:
                raw = b"".join([piece async for piece in pieces])
            try:
                result.error_code = str(json.loads(raw)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                result.error_code = "unparsed"
            return result
        decoder = SSEDecoder()
        async with contextlib.aclosing(_body(reader, chunked)) as pieces:
            async for piece in pieces:
                for event in decoder.feed(piece):
                    if result.first_event_s is None:
                        result.first_event_s = time.perf_counter() - start
                    result.last_event = event.event
                    result.events += 1
                    if event.event == "delta":
                        if result.first_delta_s is None:
                            result.first_delta_s = time.perf_counter() - start
                            if first_delta_only:
                                return result
                        result.text.append(json.loads(event.data)["text"])
                    elif event.event == "error":
                        result.error_code = str(json.loads(event.data).get("code", "unparsed"))
                    if event.event in ("done", "error"):
                        result.total_s = time.perf_counter() - start
                        return result
        return result
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _body(reader: asyncio.StreamReader, chunked: bool) -> AsyncGenerator[bytes, None]:
    """The body's bytes as they arrive (chunked or read to the end of the connection)."""
    while True:
        if chunked:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                return
            yield data
