"""The HTTP response of a turn's event stream.

- Compressed (gzip or deflate) when the client's Accept-Encoding allows it, every write
  flushed so that each frame is decodable as soon as it arrives (`compression.py`);
  `Vary: Accept-Encoding` either way. Without Accept-Encoding the bytes are the frames.
- Frames are written straight to the connection when the server offers it (the gateway's
  protocol, `http_protocol.StreamHooks`): no ASGI message through every middleware per frame.
  A frame is written at the end of the event loop's turn in which it was made, together with
  any others made in that same turn (frames that were already waiting: one write, one flush),
  so a frame alone goes out at once and a burst costs one system call. Those made in the turn
  in which the events end (the answer's last frame) go out with the body's end, in one write.
- A client that hangs up ends the events at once: the connection's loss interrupts the
  stream's feed; under another server a task waits for `http.disconnect` instead.
- While the connection is served it holds the user's stream slot, given back however it
  ended; `on_close` runs once the connection is done with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .compression import StreamCompressor, negotiate
from .http_protocol import STREAM_HOOKS, StreamHooks
from .turns.stream import TurnStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Vary": "Accept-Encoding"}


def _accept_encoding(scope: Scope) -> str | None:
    values = [value.decode("latin-1") for name, value in scope.get("headers", ()) if name == b"accept-encoding"]
    return ", ".join(values) if values else None


def _compression_enabled(scope: Scope) -> bool:
    state = getattr(scope.get("app"), "state", None)
    return bool(getattr(state, "sse_compression", True))


class StreamResponse(StreamingResponse):
    """A turn's stream (`content`: its events as SSE, by default Parley's own frames)."""

    def __init__(
        self,
        stream: TurnStream,
        content: AsyncIterator[bytes] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.stream = stream
        self.content = stream.body if content is None else content
        self.on_close = on_close
        super().__init__(
            self.content,
            media_type="text/event-stream",
            headers={**SSE_HEADERS, "X-Parley-Response-Id": stream.response_id},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        coding = negotiate(_accept_encoding(scope)) if _compression_enabled(scope) else None
        compressor = StreamCompressor(coding) if coding is not None else None
        headers = list(self.raw_headers)
        if coding is not None:
            headers.append((b"content-encoding", coding.encode()))
        hooks: StreamHooks | None = scope.get("extensions", {}).get(STREAM_HOOKS)
        # Not within the body: when the client leaves, the body ends, and anything it still
        # awaited would be cut short.
        async with self.stream.held():
            listener: asyncio.Task[None] | None = None
            try:
                if hooks is not None:
                    hooks.on_lost = self.stream.interrupt
                else:
                    listener = asyncio.create_task(self._listen_for_disconnect(receive))
                await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
                last = b""
                if hooks is not None and hooks.can_write:
                    last = await self._write_direct(hooks, compressor)
                else:
                    async for chunk in self.content:
                        if compressor is not None:
                            chunk = compressor.compress(chunk)
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tail = compressor.finish(last) if compressor is not None else last
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            finally:
                if hooks is not None:
                    hooks.on_lost = None
                if listener is not None:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listener
                try:
                    # Also when the client left while a frame was being sent (the body was
                    # not closed then): runs what the body does at its end.
                    await self.content.aclose()  # type: ignore[attr-defined]
                finally:
                    if self.on_close is not None:
                        await self.on_close()

    async def _write_direct(self, hooks: StreamHooks, compressor: StreamCompressor | None) -> bytes:
        """The frames straight to the connection, those made in one turn of the event loop in
        one write (see the module). Those made in the turn in which the events ended (the
        answer's last frame, mostly) are returned instead, to go out with the body's end: one
        write for both."""
        loop = asyncio.get_running_loop()
        made: list[bytes] = []
        flush_due = False

        def flush() -> None:
            nonlocal flush_due
            flush_due = False
            if not made:
                return
            data = made[0] if len(made) == 1 else b"".join(made)
            made.clear()
            hooks.write_chunk(compressor.compress(data) if compressor is not None else data)

        try:
            async for chunk in self.content:
                if hooks.write_paused:
                    flush()
                    await hooks.drain()
                if hooks.disconnected:
                    break
                made.append(chunk)
                if not flush_due:
                    flush_due = True
                    loop.call_soon(flush)
        except BaseException:
            flush()
            raise
        # A flush still due finds nothing left to write.
        last = b"".join(made)
        made.clear()
        return last

    async def _listen_for_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.stream.interrupt()


def sse_response(stream: TurnStream) -> StreamingResponse:
    return StreamResponse(stream)
