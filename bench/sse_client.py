"""A minimal HTTP/1.1 SSE client on raw asyncio streams, so that a thousand open streams cost
the load generator little CPU (the point is to measure the gateway, not the client)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field


@dataclass
class StreamResult:
    status: int = 0
    first_delta_s: float | None = None
    total_s: float | None = None
    events: int = 0
    last_event: str = ""
    text: list[str] = field(default_factory=list)


async def post_sse(
    host: str, port: int, path: str, token: str, body: dict[str, object], first_delta_only: bool = False
) -> StreamResult:
    """POST and read the SSE answer to its end (or only to its first delta, then hang up)."""
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    result = StreamResult()
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        status_line = await reader.readline()
        result.status = int(status_line.split()[1])
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower():
                chunked = True
        buffer = b""
        event = ""
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    break
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
            while b"\n" in buffer:
                raw, _, buffer = buffer.partition(b"\n")
                line_s = raw.decode().rstrip("\r")
                if line_s.startswith("event: "):
                    event = line_s[7:]
                elif line_s.startswith("data: ") and event == "delta":
                    if result.first_delta_s is None:
                        result.first_delta_s = time.perf_counter() - start
                        if first_delta_only:
                            return result
                    result.text.append(json.loads(line_s[6:])["text"])
                elif line_s == "":
                    if event:
                        result.events += 1
                        result.last_event = event
                    if event in ("done", "error"):
                        result.total_s = time.perf_counter() - start
                        return result
                    event = ""
        return result
    finally:
        writer.close()
        await writer.wait_closed()
