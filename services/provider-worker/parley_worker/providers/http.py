"""Streaming plumbing every HTTP provider shares: open the request, turn failures into
ProviderErrors, enforce the stream's timeouts, and close the upstream response the moment
the consumer stops listening.

Closing is what makes a cancel reach the provider: when the worker cancels a job (or just
stops iterating and calls `aclose()`), the generators below unwind, `client.stream(...)`
exits and the HTTP connection is closed, so the provider stops generating (and billing).
Consumers should iterate a provider stream inside `contextlib.aclosing(...)` so an early
`break` closes it at once rather than when the generator is garbage-collected.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig

from . import Chunk, TextChunk
from .errors import (
    BadRequest,
    ConnectionFailed,
    ErrorDetail,
    ProviderError,
    ProviderTimeout,
    TimeoutPhase,
    error_from_status,
    redact,
)
from .sse import ServerSentEvent, aiter_sse
from .wire import Http11Pool, ResponseBody

# An error body is read for its message only; a provider (or a proxy) answering megabytes
# of HTML must not hold the worker.
_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class StreamTimeouts:
    """Seconds allowed to connect, until the first text token, between tokens, and in all."""

    connect_s: float = 10.0
    first_token_s: float = 120.0
    idle_s: float = 60.0
    total_s: float = 900.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "first_token_s", "idle_s", "total_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"StreamTimeouts.{name} must be positive")

    def httpx_timeout(self) -> httpx.Timeout:
        # Reads are bounded by the first-token, idle and total timers (which know what a
        # token is); httpx only bounds connecting, sending and waiting for a pooled connection.
        return httpx.Timeout(connect=self.connect_s, read=None, write=self.connect_s, pool=self.connect_s)


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several connection pools behind one transport; each request goes to the pool with the
    fewest responses open (the first of them on a tie).

    The pools are the worker's lean HTTP/1.1 pools (wire.Http11Pool: an asyncio protocol per
    connection over httptools' parser, not httpx's httpcore/h11/anyio stack, which cost about
    ten times a bare socket's CPU per stream). Spread over `shards` pools, each pool's idle
    list stays short. A quiet worker keeps sending through the first pool, so its requests
    reuse one kept-alive connection (no new TLS handshake each time). Every pool may open
    `limits.max_connections` (a worker never runs more streams than its prefetch, so no pool
    waits for a connection while another has room) and keeps its share of the idle ones.
    """

    def __init__(self, *, limits: httpx.Limits, shards: int = 8) -> None:
        if shards < 1:
            raise ValueError("ShardedTransport needs at least one shard")
        keepalive = limits.max_keepalive_connections
        per_pool = httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=None if keepalive is None else max(1, -(-keepalive // shards)),
            keepalive_expiry=limits.keepalive_expiry,
        )
        # One TLS context for every pool: loading the CA bundle is the slow part of making one.
        ssl_context = httpx.create_ssl_context()
        self._pools = [Http11Pool(limits=per_pool, ssl_context=ssl_context) for _ in range(shards)]
        self.open = [0] * shards

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        open_ = self.open
        shard = open_.index(min(open_))
        open_[shard] += 1
        try:
            response = await self._pools[shard].handle_async_request(request)
        except BaseException:
            open_[shard] -= 1
            raise
        stream = response.stream
        assert isinstance(stream, ResponseBody)
        # The pool's own body says when it closes: no wrapper around each of its reads.
        stream.on_close = functools.partial(_closed, open_, shard)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _closed(counts: list[int], shard: int) -> None:
    counts[shard] -= 1


def upstream_client(*, total_timeout_s: float, connect_timeout_s: float, max_streams: int) -> httpx.AsyncClient:
    """The one HTTP client of a worker process for every provider call (timeouts are per phase:
    StreamTimeouts), over a ShardedTransport sized for `max_streams` streams at once."""
    limits = httpx.Limits(max_connections=max_streams * 2, max_keepalive_connections=100)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(total_timeout_s, connect=connect_timeout_s),
        transport=ShardedTransport(limits=limits, shards=max(1, min(16, max_streams // 12))),
    )


ErrorReader = Callable[[int, bytes], ErrorDetail]


async def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    async for piece in response.aiter_bytes():
        body.extend(piece)
        if len(body) >= _ERROR_BODY_LIMIT:
            break
    return bytes(body[:_ERROR_BODY_LIMIT])


async def open_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Mapping[str, Any],
    provider: str,
    timeouts: StreamTimeouts,
    read_error: ErrorReader,
    api_key: SecretStr | None,
    keep_stray: bool = False,
) -> AsyncGenerator[ServerSentEvent, None]:
    """POST `body` as JSON and yield the Server-Sent Events of the answer (with `keep_stray`,
    text outside the SSE framing too, as events with `stray=True`: see sse.py).

    An HTTP error answer raises the ProviderError it stands for (`read_error` turns the
    provider's own error body into a message); a refused or dropped connection raises
    ConnectionFailed, a connect timeout ProviderTimeout. Closing the generator closes the
    response.
    """
    secret = api_key.get_secret_value() if api_key else None
    streaming = False
    try:
        async with client.stream(
            "POST", url, headers=dict(headers), json=dict(body), timeout=timeouts.httpx_timeout()
        ) as response:
            # A redirect is an error too: a base URL that moved is a configuration to fix.
            if not response.is_success:
                raw = await _read_limited(response)
                detail = read_error(response.status_code, raw)
                detail = ErrorDetail(
                    message=redact(detail.message, secret),
                    kind=detail.kind,
                    retry_after_s=detail.retry_after_s,
                )
                raise error_from_status(response.status_code, detail, headers=response.headers, provider=provider)
            streaming = True
            async for event in aiter_sse(response.aiter_bytes(), keep_stray=keep_stray):
                yield event
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        raise ProviderTimeout(f"{provider}: connecting timed out", phase="connect", provider=provider) from None
    except httpx.TimeoutException as exc:
        raise ProviderTimeout(
            f"{provider}: {type(exc).__name__} while talking to the provider",
            phase="idle" if streaming else "first_token",
            provider=provider,
        ) from None
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
        # Our request cannot be sent as it is (a base URL without http(s)://, say): retrying won't help.
        message = f"{provider}: cannot send the request: {redact(str(exc), secret)}"
        raise BadRequest(message, status=None, provider=provider) from None
    except httpx.TransportError as exc:
        # ConnectError, ReadError, RemoteProtocolError (a body cut short): the connection is gone
        # (a ConnectError before the request left: the provider never saw it).
        reason = redact(str(exc), secret) or type(exc).__name__
        raise ConnectionFailed(
            f"{provider}: connection failed: {reason}",
            provider=provider,
            reached_provider=not isinstance(exc, httpx.ConnectError),
        ) from None


async def guard_stream(
    chunks: AsyncGenerator[Chunk, None], *, timeouts: StreamTimeouts, provider: str
) -> AsyncGenerator[Chunk, None]:
    """`chunks`, bounded in time: the first TextChunk within `first_token_s` of the start,
    each later chunk within `idle_s` of the previous one, everything within `total_s`.

    A missed deadline raises ProviderTimeout naming it. However the iteration ends (done,
    error, timeout, `aclose()` or cancellation), `chunks` is closed before this returns.

    One timer for the whole stream, not one per chunk: each wait for a chunk only moves the
    deadline; the timer, when it fires, looks whether the deadline moved meanwhile and waits on
    for it, else cancels the wait (as `asyncio.timeout` does, and with its bookkeeping of
    cancels: a cancel of the consumer's own during the wait stays a cancel).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    total_deadline = start + timeouts.total_s
    first_deadline = start + timeouts.first_token_s
    idle_s = timeouts.idle_s
    # The wait in progress: its task, its deadline and phase; whether the timer cancelled it.
    task: asyncio.Task[Any] | None = None
    deadline = 0.0
    phase: TimeoutPhase = "first_token"
    fired = False
    timer: asyncio.TimerHandle | None = None

    def on_timer() -> None:
        nonlocal timer, fired
        timer = None
        if task is None:
            return  # no wait in progress: the next one sets the timer again
        if loop.time() < deadline:
            timer = loop.call_at(deadline, on_timer)
            return
        fired = True
        task.cancel()

    seen_text = False
    try:
        while True:
            if seen_text:
                deadline, phase = loop.time() + idle_s, "idle"
            else:
                deadline, phase = first_deadline, "first_token"
            if total_deadline <= deadline:
                deadline, phase = total_deadline, "total"
            task = asyncio.current_task()
            assert task is not None
            cancelling = task.cancelling()
            if timer is None:
                timer = loop.call_at(deadline, on_timer)
            elif timer.when() > deadline:
                # The deadline came nearer (the first token's wait ends in the total time).
                timer.cancel()
                timer = loop.call_at(deadline, on_timer)
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if fired and task.uncancel() <= cancelling:
                    raise ProviderTimeout(
                        f"{provider}: {_TIMEOUT_TEXT[phase]}", phase=phase, provider=provider
                    ) from None
                raise
            finally:
                task = None
            if isinstance(chunk, TextChunk):
                seen_text = True
            yield chunk
    finally:
        task = None
        if timer is not None:
            timer.cancel()
        await chunks.aclose()


_TIMEOUT_TEXT: dict[TimeoutPhase, str] = {
    "connect": "connecting timed out",
    "first_token": "no first token in time",
    "idle": "the stream went quiet for too long",
    "total": "the answer took longer than allowed in total",
}


async def drain(events: AsyncIterator[ServerSentEvent], *, within_s: float = 0.25) -> None:
    """Read what is left of a response after the answer's last event, so that httpx can put
    the connection back in its pool (a response closed half-read closes its connection, and
    the next request pays for a new TLS handshake). A server that keeps the stream open
    longer than `within_s` loses the connection instead; the answer is complete either way.
    """
    with suppress(TimeoutError, ProviderError):
        async with asyncio.timeout(within_s):
            async for _ in events:
                pass


def inline_image(image: chat_pb2.ImagePart, *, provider: str) -> tuple[str, str]:
    """(MIME type, base64 text) of an image sent as bytes; every provider's inline form needs both."""
    if not image.data or not image.mime_type:
        raise BadRequest(
            f"{provider}: image {image.media_id or '?'} has no bytes or no MIME type", status=None, provider=provider
        )
    return image.mime_type, base64.b64encode(image.data).decode("ascii")


class HttpProvider:
    """A provider reached over HTTP, as every adapter streams one: POST the request its API
    wants (`_request`), read the Server-Sent Events of the answer (open_sse, the adapter's
    `_read_error` for an error body), decode them (`_decode`), all bounded by guard_stream."""

    # Whether text outside the SSE framing reaches `_decode` (events with `stray=True`).
    _keep_stray = False

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: SecretStr | None,
        client: httpx.AsyncClient,
        timeouts: StreamTimeouts,
        models: Mapping[str, ModelConfig] | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.client = client
        self.timeouts = timeouts
        # The registry's entries by public model name: each job's sampling options (and, for
        # OpenAI-compatible servers, its output-limit field).
        self.models = models or {}

    def stream(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        """Text chunks, then a UsageReport and a Finish; closing it closes the upstream response."""
        return guard_stream(self._chunks(job), timeouts=self.timeouts, provider=self.name)

    async def _chunks(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        url, headers, body = self._request(job, self.models.get(job.model))
        events = open_sse(
            self.client,
            url,
            headers={"Accept": "text/event-stream", **headers},
            body=body,
            provider=self.name,
            timeouts=self.timeouts,
            read_error=self._read_error,
            api_key=self.api_key,
            keep_stray=self._keep_stray,
        )
        async with aclosing(events), aclosing(self._decode(events, job)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _request(
        self, job: chat_pb2.ProviderJob, spec: ModelConfig | None
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL, the headers (the key among them) and the JSON body that ask for `job`'s answer."""
        raise NotImplementedError

    def _read_error(self, status: int, body: bytes) -> ErrorDetail:
        """The message (and kind) of an error answer with this status and body."""
        raise NotImplementedError

    def _decode(self, events: AsyncIterator[ServerSentEvent], job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks (Provider.stream's promise) from the events of its response."""
        raise NotImplementedError
