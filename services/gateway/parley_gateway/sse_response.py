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
- Detached from the request's handling (`DetachedStreams`, the outermost of the app's own
  middleware): once the response's start went out through every middleware (their headers in
  it), the body is served after the route, its dependencies and the inner middleware have
  returned, so an open stream holds none of their objects (FastAPI's routing, exit stacks,
  the Request and its parsed body: bench/streams.py's memory profile). The body's end still
  goes out through the middleware outside it (the error middleware and the request's
  telemetry, whose span ends with the stream). A middleware inside that holds the start back
  (one that sends from a task of its own, as Starlette's BaseHTTPMiddleware does) keeps its
  streams attached: they are served through it, as before. No dependency may use `yield`
  (deps.py): its cleanup would run when the response detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from fastapi.responses import StreamingResponse
from fastapi.telemetry import get_telemetry_data
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .compression import StreamCompressor, negotiate
from .http_protocol import STREAM_HOOKS, StreamHooks
from .turns.stream import TurnStream

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Vary": "Accept-Encoding"}

DETACH: Final = "parley.detach"


class Detach:
    """One request's way out of its own handling: a `StreamResponse` that leaves it is served by
    `DetachedStreams` once the app under that middleware has returned."""

    __slots__ = ("response",)

    def __init__(self) -> None:
        self.response: StreamResponse | None = None


class DetachedStreams:
    """Serves the body of a stream whose response detached itself (`StreamResponse`) after the
    app under it returned: the route's frames, its dependencies' and the middleware inside this
    one are gone while the stream stays open. Only for requests on the gateway's own protocol
    (`StreamHooks`); the app sees a copy of the scope, so what routing adds to it goes too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions")
        if scope["type"] != "http" or not extensions or STREAM_HOOKS not in extensions:
            await self.app(scope, receive, send)
            return
        detach = Detach()
        inner = dict(scope)
        inner["extensions"] = {**extensions, DETACH: detach}
        try:
            await self.app(inner, receive, send)
        except BaseException:
            # Failed (or cancelled) after the response detached: it is not served, but what
            # it holds is given back.
            response, detach.response = detach.response, None
            if response is not None:
                await response.release()
            raise
        del inner
        response, detach.response = detach.response, None
        if response is not None:
            data = get_telemetry_data()
            if data is not None:
                # FastAPI's telemetry keeps the request, its body and its parsed arguments for
                # log and span processors until the request's telemetry ends (with the stream,
                # outside this middleware); the handling is over, and the stream needs none.
                data.request = data.body = data.values = None
            await response.serve_detached(receive, send)


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
        # Set while the response waits to be served after detaching: its hooks and compressor.
        self._detached: tuple[StreamHooks, StreamCompressor | None] | None = None
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
        extensions = scope.get("extensions", {})
        hooks: StreamHooks | None = extensions.get(STREAM_HOOKS)
        detach: Detach | None = extensions.get(DETACH) if hooks is not None else None
        start: Message = {"type": "http.response.start", "status": self.status_code, "headers": headers}
        if hooks is not None and detach is not None:
            # The start through every middleware now (their headers); the body once the app
            # has returned (DetachedStreams). The client's leaving is heard from now on.
            hooks.on_lost = self.stream.interrupt
            try:
                await send(start)
            except BaseException:
                hooks.on_lost = None
                await self.release()
                raise
            if hooks.can_write:
                self._detached = (hooks, compressor)
                detach.response = self
                return
            # A middleware inside held the start back (it sends from a task of its own, or
            # buffers): the body goes out here, through it.
            await self._serve(hooks, compressor, None, receive, send)
            return
        await self._serve(hooks, compressor, start, receive, send)

    async def serve_detached(self, receive: Receive, send: Send) -> None:
        """The body of a response whose start went out before it detached."""
        assert self._detached is not None
        (hooks, compressor), self._detached = self._detached, None
        await self._serve(hooks, compressor, None, receive, send)

    async def release(self) -> None:
        """What serving the body would have given back at its end, without serving it."""
        if self._detached is not None:
            self._detached[0].on_lost = None
        self._detached = None
        async with self.stream.held():
            await self._end_body()

    async def _end_body(self) -> None:
        """Close the body (also one the client left while a frame was being sent, which was not
        closed then: runs what the body does at its end), then `on_close`."""
        try:
            await self.content.aclose()  # type: ignore[attr-defined]
        finally:
            if self.on_close is not None:
                await self.on_close()

    async def _serve(
        self,
        hooks: StreamHooks | None,
        compressor: StreamCompressor | None,
        start: Message | None,
        receive: Receive,
        send: Send,
    ) -> None:
        """The body (after `start`, unless it went out already), the slot held meanwhile."""
        # Not within the body: when the client leaves, the body ends, and anything it still
        # awaited would be cut short.
        async with self.stream.held():
            listener: asyncio.Task[None] | None = None
            try:
                if hooks is not None:
                    hooks.on_lost = self.stream.interrupt
                    if hooks.disconnected:
                        # Gone before it was listened for (while the response detached).
                        self.stream.interrupt()
                else:
                    listener = asyncio.create_task(self._listen_for_disconnect(receive))
                if start is not None:
                    await send(start)
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
                await self._end_body()

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
