"""A lean HTTP/1.1 connection pool for the worker's provider calls, as an httpx transport.

httpx's own transport goes through httpcore, h11 and anyio: for a 10-token SSE answer that was
about 1.4 ms of CPU where a bare asyncio socket reads the same stream for 0.15 ms (README,
"The floor of this design"). This transport keeps httpx's client (its request building, proxies
from the environment, content decoding, exceptions) and replaces what is under it: an asyncio
Protocol per connection whose bytes go straight into httptools' C parser (llhttp, as uvicorn
uses it), a response body handed over as the loop delivers it (the pieces of one read joined),
and a pool of idle kept-alive connections per origin (no walk over every connection).

What it keeps of httpcore's behaviour: connect timeouts (httpx.ConnectTimeout) and read
timeouts when set (httpx.ReadTimeout); httpx's exception types for a refused connection
(ConnectError), a connection lost mid-answer (RemoteProtocolError, ReadError); a response
closed before its end closes its connection (a cancel reaches the provider at once); only a
response read to its end puts its connection back; idle connections expire after
`keepalive_expiry`; at most `max_connections` per origin, further requests wait for one (pool
timeout). A kept-alive connection the server has closed (or is closing) is never reused; a
request is never sent twice (a provider call is a POST: the provider may have taken it even when
no byte of an answer came back, and a second copy would run and bill the model again), as
httpcore does not either.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import httptools
import httpx

# A response body buffered past this (the worker reads slower than the provider sends) stops
# the socket's reads until the worker catches up.
_HIGH_WATER = 256 * 1024
_DEFAULT_PORTS = {b"http": 80, b"https": 443}

Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as it arrives."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # In the pool between requests: bytes arriving then are no answer to anything.
        self.idle = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.http_version = "1.1"
        self.received = False
        self.error: BaseException | None = None
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self._paused = False

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no asyncio.Transport subclass; they have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.idle:
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
            return
        if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if exc is None and self.headers_done and self._reads_to_close():
                # No length and not chunked: the body ends where the connection does.
                self.complete = True
            elif not self.received:
                self.error = httpx.RemoteProtocolError("Server disconnected without sending a response.")
            elif isinstance(exc, OSError):
                self.error = httpx.ReadError(str(exc) or type(exc).__name__)
            else:
                self.error = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        self._wake()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self.headers, self.reason = [], b""
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.http_version = self._parser.get_http_version()
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True
            self._wake()

    # -- used by the pool and the body --------------------------------------------------------

    def _reads_to_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, read_timeout_s: float | None) -> None:
        """Until the parser has something new (or the connection is lost)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if read_timeout_s is None:
            try:
                await waiter
            finally:
                self._waiter = None
            return
        timer = loop.call_later(read_timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if waiter.result() is _EXPIRED:
            raise httpx.ReadTimeout("timed out reading from the provider")

    def take_body(self) -> bytes:
        """What the body has received and not yet been taken, the pieces joined."""
        body = self.body
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _readable(transport: asyncio.Transport) -> bool:
    """Whether an idle connection's socket has something to read that the loop has not read
    yet: the server's close (or bytes that answer nothing). It is not reused then (httpcore
    asks the same before it reuses a connection)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


_EXPIRED: Any = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class ResponseBody(httpx.AsyncByteStream):
    """A response body read off its connection; closing it settles the connection: back to
    the pool when the response was read to its end, else closed."""

    def __init__(self, connection: _Connection, pool: Http11Pool, read_timeout: float | None) -> None:
        self._connection: _Connection | None = connection
        self._pool = pool
        self._read_timeout = read_timeout
        # Called once when the body is closed (ShardedTransport counts open responses with it).
        self.on_close: Callable[[], None] | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        while True:
            if connection.body:
                yield connection.take_body()
            elif connection.complete:
                return
            elif connection.error is not None:
                raise connection.error
            else:
                await connection.wait(self._read_timeout)

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.reusable() and not connection.body:
            self._pool.release(connection)
        else:
            self._pool.discard(connection)
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close()


class Http11Pool(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections to any number of origins; see the module docstring."""

    def __init__(self, *, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_connections = limits.max_connections
        self._max_idle = limits.max_keepalive_connections
        self._keepalive_expiry = limits.keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[Origin, list[_Connection]] = {}
        self._count: dict[Origin, int] = {}
        self._idle_total = 0
        self._waiting: dict[Origin, deque[asyncio.Future[None]]] = {}
        self._closed = False

    # -- connections --------------------------------------------------------------------------

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            connection.idle = False
            self._idle_total -= 1
            expired = self._keepalive_expiry is not None and now - connection.idle_since > self._keepalive_expiry
            transport = connection.transport
            closing = transport is None or transport.is_closing() or _readable(transport)
            if connection.closed or closing or expired:
                self.discard(connection)
                continue
            connection._reset()
            return connection
        return None

    async def _open(self, origin: Origin, timeouts: dict[str, Any]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        hostname = host.decode("ascii")
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            tls = self._ssl if self._ssl is not None else httpx.create_ssl_context()
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(origin),
                    hostname.strip("[]"),
                    port,
                    ssl=tls,
                    server_hostname=hostname.strip("[]") if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {hostname}:{port} timed out") from None
        except OSError as exc:  # refused, unreachable, name not found, TLS failures
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return protocol

    async def _acquire(self, origin: Origin, timeouts: dict[str, Any]) -> tuple[_Connection, bool]:
        """A connection to `origin`, and whether it was kept alive from an earlier request."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise httpx.PoolTimeout("the connection pool is closed")
            connection = self._take_idle(origin, loop.time())
            if connection is not None:
                return connection, True
            if self._max_connections is None or self._count.get(origin, 0) < self._max_connections:
                self._count[origin] = self._count.get(origin, 0) + 1
                try:
                    return await self._open(origin, timeouts), False
                except BaseException:
                    self._forget(origin)
                    raise
            waiter = loop.create_future()
            queue = self._waiting.setdefault(origin, deque())
            queue.append(waiter)
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no connection to the provider became free in time") from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # Woken, then cancelled or timed out in the same turn: the wake-up goes to
                    # the next in line, or a free connection would wait for nobody.
                    self._notify(origin)
                raise
            finally:
                if waiter in queue:
                    queue.remove(waiter)

    def _forget(self, origin: Origin) -> None:
        self._count[origin] -= 1
        self._notify(origin)

    def _notify(self, origin: Origin) -> None:
        queue = self._waiting.get(origin)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, connection: _Connection) -> None:
        """A connection whose response was read to its end: kept for the next request."""
        if self._closed or (self._max_idle is not None and self._idle_total >= self._max_idle):
            self.discard(connection)
            return
        connection.idle, connection.idle_since = True, asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_total += 1
        self._notify(connection.origin)

    def discard(self, connection: _Connection) -> None:
        connection.close()
        self._forget(connection.origin)

    # -- the transport ------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"Request URL has an unsupported protocol '{scheme.decode()}://'.")
        if not url.raw_host:
            raise httpx.UnsupportedProtocol("Request URL is missing a host.")
        origin = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        message = await _serialise(request)
        connection, _ = await self._acquire(origin, timeouts)
        try:
            if connection.closed or connection.transport is None:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            connection.transport.write(message)
            while not connection.headers_done:
                if connection.error is not None:
                    raise connection.error
                await connection.wait(timeouts.get("read"))
        except BaseException:
            self.discard(connection)
            raise
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=ResponseBody(connection, self, timeouts.get("read")),
            extensions={
                "http_version": f"HTTP/{connection.http_version}".encode(),
                "reason_phrase": connection.reason.strip(),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
            idle.clear()
        self._idle_total = 0
        for queue in self._waiting.values():
            for waiter in queue:
                if not waiter.done():
                    waiter.set_result(None)


async def _serialise(request: httpx.Request) -> bytes:
    """The request's head and body, as one write."""
    url = request.url
    target = url.raw_path or b"/"
    head = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError("illegal header: line breaks are not allowed")
        if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
            chunked = True
        head += (name, b": ", value, b"\r\n")
    head.append(b"\r\n")
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    parts = [part async for part in stream]
    if chunked:
        body = [b"%x\r\n%s\r\n" % (len(part), part) for part in parts if part]
        body.append(b"0\r\n\r\n")
        parts = body
    return b"".join(head + parts)


__all__ = ["Http11Pool", "ResponseBody"]
