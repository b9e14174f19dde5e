"""A small keep-alive HTTP/1.1 client on raw asyncio streams for streaming load: it notes when
the first token arrives, whether the stream ended as it should, and every byte read off the
socket (status line, headers, chunk framing), so that hundreds of turns a second cost the load
generator little CPU and the bytes on the wire can be counted exactly."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import zlib
from dataclasses import dataclass


@dataclass
class Reply:
    status: int = 0
    first_token_s: float | None = None
    total_s: float | None = None
    ended: bool = False  # the end marker was seen
    wire_bytes: int = 0  # everything read for this response
    body: bytes = b""  # decoded (de-chunked, decompressed) when `keep_body`
    content_encoding: str = ""
    tail: bytes = b""  # the last bytes of the (encoded) body, for error reports


class Connection:
    """One keep-alive connection; opened again when the server closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._close_after = False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str],
        first: re.Pattern[bytes],
        end: bytes,
        keep_body: bool = False,
    ) -> Reply:
        """POST `body`; read the whole response. `first` marks the first token, `end` the end of
        the answer (searched in the decoded body, or the raw body when it is compressed)."""
        if self._writer is None or self._reader is None or self._reader.at_eof():
            await self.close()
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._reader, self._writer
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        start = time.perf_counter()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        reply = Reply()
        try:
            await self._read(reader, reply, start, first, end, keep_body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            await self.close()
            return reply
        if not reply.ended or self._close_after:
            await self.close()
        return reply

    async def _read(
        self,
        reader: asyncio.StreamReader,
        reply: Reply,
        start: float,
        first: re.Pattern[bytes],
        end: bytes,
        keep_body: bool,
    ) -> None:
        line = await reader.readline()
        reply.wire_bytes += len(line)
        if not line:
            raise ValueError("connection closed before the status line")
        reply.status = int(line.split()[1])
        chunked, length, self._close_after = False, -1, False
        while True:
            line = await reader.readline()
            reply.wire_bytes += len(line)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "content-length":
                length = int(value)
            elif name == "connection" and value == "close":
                self._close_after = True
            elif name == "content-encoding":
                reply.content_encoding = value
        inflate = zlib.decompressobj(wbits=47) if reply.content_encoding in ("gzip", "deflate") else None
        seen = b""  # a few bytes of the previous piece, so a marker split across pieces is found
        kept: list[bytes] = []
        while True:
            if chunked:
                size_line = await reader.readline()
                reply.wire_bytes += len(size_line)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    trailer = await reader.readline()
                    reply.wire_bytes += len(trailer)
                    break
                data = await reader.readexactly(size + 2)
                reply.wire_bytes += len(data)
                data = data[:-2]
            elif length >= 0:
                if length == 0:
                    break
                data = await reader.read(min(length, 65536))
                if not data:
                    raise ValueError("connection closed mid-body")
                length -= len(data)
                reply.wire_bytes += len(data)
            else:
                data = await reader.read(65536)
                if not data:
                    self._close_after = True
                    break
                reply.wire_bytes += len(data)
            if inflate is not None:
                data = inflate.decompress(data)
            if keep_body:
                kept.append(data)
            window = seen + data
            if reply.first_token_s is None and first.search(window):
                reply.first_token_s = time.perf_counter() - start
            if end in window:
                reply.ended = True
            seen = window[-64:]
        reply.tail = seen
        reply.total_s = time.perf_counter() - start
        reply.body = b"".join(kept)
