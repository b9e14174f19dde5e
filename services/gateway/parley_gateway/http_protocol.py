"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol, with bounds on what a
client may make the gateway hold before its request reaches the app.

- Headers: the request line and every header together at most `max_header_bytes`, one line
  (the request line, or a header's name and value) at most `max_header_line_bytes`. Past
  either: 431 and the connection is closed, as soon as the excess arrives — httptools would
  otherwise buffer a header of any size (copying it again with every piece that arrives).
- Time: a request's headers must have arrived `header_timeout_s` after its first byte (or
  after the connection was opened); a body must keep coming, at least `body_min_bytes_per_s`
  on average after its first `body_timeout_s`. Otherwise: 408 (when nothing was answered yet)
  and the connection is closed. Time in which the gateway itself stopped reading (its app
  had not taken the body read so far) does not count against the client.

Every error here is JSON like the app's, `{"error": {"code", "message"}}`, with
`Connection: close`; the gateway then stops reading and closes the connection a moment later,
so a client still sending sees the answer before the connection goes.

Event streams: each request's scope carries a `StreamHooks` (extension `parley.stream`), with
which a streaming response writes its body straight to the connection (no ASGI message and
middleware wrapper per frame) and learns that its client is gone when the connection drops,
without a task of its own waiting for `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

# How long a refused connection stays open (not read) after its answer was sent.
LINGER_S = 1.0


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    max_header_line_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    body_min_bytes_per_s: int


STREAM_HOOKS: Final = "parley.stream"


class StreamHooks:
    """One request's direct line to its connection, for a response streamed in many writes.

    `write_chunk` sends one piece of a chunked body as uvicorn's own `send` would (`drain`
    first waits while the client does not read); it can be used once the response's start
    went through `send` (so every middleware's headers are in it) and the body is chunked; the
    body's end still goes through `send`. `on_lost` is called (once) when the connection drops
    mid-response.
    """

    __slots__ = ("cycle", "on_lost")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self.cycle = cycle
        self.on_lost: Callable[[], None] | None = None

    @property
    def can_write(self) -> bool:
        cycle = self.cycle
        return cycle.response_started and cycle.chunked_encoding is True and not cycle.response_complete

    @property
    def disconnected(self) -> bool:
        return self.cycle.disconnected

    @property
    def write_paused(self) -> bool:
        """The client is not reading: `drain` before writing more."""
        return self.cycle.flow.write_paused and not self.cycle.disconnected

    async def drain(self) -> None:
        if self.write_paused:
            await self.cycle.flow.drain()

    def write_chunk(self, data: bytes) -> None:
        cycle = self.cycle
        if data and not cycle.disconnected and not cycle.transport.is_closing():
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))

    def lost(self) -> None:
        callback, self.on_lost = self.on_lost, None
        if callback is not None and not self.cycle.response_complete:
            callback()


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is over a limit."""


def error_response(status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]
    # Slots, not the instance dict: uvicorn's 27 attributes and these would outgrow CPython's
    # shared-key dict (30 keys at most); 1.2 KB less per connection (3.45 → 2.23 KB).
    __slots__ = (
        "_body_bytes",
        "_body_since",
        "_body_timer",
        "_header_bytes",
        "_header_timer",
        "_in_headers",
        "_message_ended_in_feed",
        "_refusal",
        "_refused",
        "_reported",
        "_request_begun",
        "_stream_hooks",
        "_url_bytes",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The request whose headers are being read: bytes of it seen so far (whole pieces
        # counted as they arrive), the completed pieces the parser reported, its URL's length.
        self._in_headers = True
        self._header_bytes = 0
        self._reported = 0
        self._url_bytes = 0
        self._request_begun = False
        self._message_ended_in_feed = False
        self._header_timer: asyncio.TimerHandle | None = None
        # The body being read: since when (moved on while the gateway does not read), how much.
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_since = 0.0
        self._body_bytes = 0
        self._refusal: tuple[int, str, str] | None = None
        self._refused = False
        # The hooks of the requests whose responses may still be streaming on this connection.
        self._stream_hooks: list[StreamHooks] = []

    # connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)
        hooks, self._stream_hooks = self._stream_hooks, []
        for hook in hooks:
            hook.lost()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is about to close
        whole_chunk_is_headers = self._in_headers
        self._message_ended_in_feed = False
        super().data_received(data)
        if self._refused or self.parser is None or self.transport.is_closing() or not self._in_headers:
            return
        if whole_chunk_is_headers and not self._message_ended_in_feed:
            self._header_bytes += len(data)
        else:
            # A request began after another ended within this piece: count what was parsed.
            self._header_bytes = max(self._header_bytes, self._reported)
        if self._header_bytes > self.limits.max_header_bytes:
            self._refuse(431, "headers_too_large", self._too_large_message())
            return
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            # Not while a response is being sent (a stream: a timer per connection, woken every
            # `header_timeout_s`, for nothing): a next request is timed from its first byte
            # (`on_message_begin`), an idle connection after the response by uvicorn's keep-alive.
            self._arm_header_timer()

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._request_begun = True
        self._header_bytes = self._reported = self._url_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        self._reported += len(url)
        if self._url_bytes > self.limits.max_header_line_bytes:
            self._refusal = (431, "headers_too_large", "the request line is too long")
            raise _Refused
        self._check_total()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._reported += size + 4
        if size > self.limits.max_header_line_bytes:
            self._refusal = (
                431,
                "headers_too_large",
                f"a header line is longer than {self.limits.max_header_line_bytes} bytes",
            )
            raise _Refused
        self._check_total()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._request_begun = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._body_since = self.loop.time()
        self._body_bytes = 0
        self._arm_body_timer(self._body_since + self.limits.body_timeout_s)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            hooks = StreamHooks(cycle)
            self._stream_hooks = [h for h in self._stream_hooks if not h.cycle.response_complete]
            self._stream_hooks.append(hooks)
            self.scope.setdefault("extensions", {})[STREAM_HOOKS] = hooks  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._in_headers = True
        self._message_ended_in_feed = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # Called by uvicorn for whatever the parser refused, including our own _Refused.
        status, code, message = self._refusal or (400, "invalid_http", "the request is not valid HTTP/1.1")
        self._refuse(status, code, message)

    # limits

    def _check_total(self) -> None:
        if self._reported > self.limits.max_header_bytes:
            self._refusal = (431, "headers_too_large", self._too_large_message())
            raise _Refused

    def _too_large_message(self) -> str:
        return f"the request's headers are larger than {self.limits.max_header_bytes} bytes"

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._on_header_timeout)

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The next request's headers trail behind a response still being sent (a pipelined
            # request): the running response bounds them; look again later.
            self._arm_header_timer()
            return
        if not self._request_begun:
            self.transport.close()  # nothing of a request arrived: nothing to answer
            return
        self._refuse(408, "request_timeout", "the request's headers did not arrive in time")

    def _arm_body_timer(self, at: float) -> None:
        self._body_timer = self.loop.call_at(at, self._on_body_timeout)

    def _on_body_timeout(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            # The gateway is not reading (its app has not taken the body so far): the client
            # cannot send, so this time is not theirs; the clock starts again.
            self._body_since = now - self._body_bytes / self.limits.body_min_bytes_per_s
            self._arm_body_timer(now + self.limits.body_timeout_s)
            return
        due = self._body_since + self.limits.body_timeout_s + self._body_bytes / self.limits.body_min_bytes_per_s
        if now < due:
            self._arm_body_timer(due)
            return
        self._refuse(408, "request_timeout", "the request's body did not arrive in time")

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer with an error (unless a response was started), stop reading, close soon."""
        if self._refused:
            return
        self._refused = True
        self._cancel_timers()
        cycle = self.cycle
        if self._in_headers:
            # The request has no cycle yet; `cycle` is the one before it, if any: answer unless
            # that one's response is still being sent.
            can_answer = cycle is None or cycle.response_complete
        else:
            can_answer = cycle is not None and not cycle.response_started
        if cycle is not None and not cycle.response_complete:
            # The app waiting for this request's body sees a disconnect and sends nothing more.
            cycle.disconnected = True
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        if can_answer:
            self.transport.write(error_response(status, code, message, self.server_state.default_headers))
        self.flow.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to these limits."""

    class ConfiguredHttpProtocol(LimitedHttpProtocol):
        pass

    ConfiguredHttpProtocol.limits = limits
    return ConfiguredHttpProtocol
