"""An open event stream holds none of its request's handling (sse_response.DetachedStreams): once
the response's start went out, the route, its dependencies and the middleware inside have
returned and their objects are gone, while the stream goes on to its end. Through uvicorn with
the gateway's own HTTP protocol on a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from parley.v1 import chat_pb2
from parley_dev.infra import free_port
from parley_gateway.http_protocol import HttpLimits, protocol_class
from parley_gateway.limits import BodyLimit
from parley_gateway.ratelimit import RateLimitHeaders
from parley_gateway.sse_response import DetachedStreams, StreamResponse
from parley_gateway.turns.feed import GONE, Feed, FrameQueue, Out
from parley_gateway.turns.stream import TurnStream
from tests.support.polling import eventually


class Handling:
    """A dependency's result."""


# The requests the route was given (FastAPI's routing holds its request until the route's app
# returns).
made: list[weakref.ref[Request]] = []


async def handling(request: Request) -> Handling:
    made.append(weakref.ref(request))
    request.state.rate_limit = {"X-RateLimit-Limit": "7"}
    return Handling()


def frame(seq: int, text: str = "", done: bool = False) -> chat_pb2.StreamEvent:
    event = chat_pb2.StreamEvent(response_id="r1", conversation_id="c1", seq=seq)
    if done:
        event.done.SetInParent()
    else:
        event.delta.text = text
    return event


class PassThrough(BaseHTTPMiddleware):
    """A middleware that sends the response's start from a task of its own (Starlette's
    BaseHTTPMiddleware): the response cannot detach, and is served through it."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        return await call_next(request)


@pytest.mark.parametrize("inner", ["plain", "start held back"])
async def test_an_open_stream_holds_none_of_its_request_handling_and_ends_properly(inner: str) -> None:
    made.clear()
    release = asyncio.Event()
    closed = asyncio.Event()

    async def events() -> AsyncIterator[Out]:
        try:
            yield frame(1, "hello")
            await release.wait()
            yield frame(2, " world")
            yield frame(3, done=True)
        finally:
            closed.set()

    # As in the gateway: a tracer provider whose sampler records nothing, so FastAPI's telemetry
    # runs (and keeps the request for its processors while the request is handled).
    app = FastAPI(telemetry={"tracer_provider": TracerProvider(sampler=ALWAYS_OFF), "operation_spans": False})

    @app.post("/stream")
    async def stream(found: Annotated[Handling, Depends(handling)]) -> StreamResponse:
        return StreamResponse(TurnStream("r1", "c1", events()))

    if inner != "plain":
        app.add_middleware(PassThrough)
    app.add_middleware(BodyLimit, max_bytes=1000)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(DetachedStreams)
    port = free_port()
    limits = HttpLimits(
        max_header_bytes=8192,
        max_header_line_bytes=4096,
        header_timeout_s=10,
        body_timeout_s=10,
        body_min_bytes_per_s=100,
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol_class(limits), lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:

        async def listening() -> bool:
            return server.started

        await eventually(listening, 10, "uvicorn listening", interval_s=0.02)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
            client.stream("POST", "/stream") as response,
        ):
            assert response.status_code == 200
            assert response.headers["x-ratelimit-limit"] == "7", "the inner middleware's headers are in the start"
            chunks = response.aiter_text()
            first = await anext(chunks)
            assert "hello" in first
            gc.collect()
            assert len(made) == 1
            if inner == "plain":
                assert made[0]() is None, "the request's handling is gone while its stream is open"
            assert not closed.is_set()
            release.set()
            rest = "".join([part async for part in chunks])
        assert "world" in rest and "event: done" in rest
        await asyncio.wait_for(closed.wait(), 5)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10)


async def test_a_stream_given_up_before_its_body_ran_still_cleans_up_its_events() -> None:
    """What DetachedStreams does when the app under it fails after the response detached (and
    what a response does when its start cannot be sent): the events never ran, and closing an
    async generator that never ran skips its `finally` (a relay's: its feed's tasks cancelled,
    its place among the live streams given up)."""
    feed = Feed(FrameQueue())
    cleaned = asyncio.Event()

    async def relay() -> AsyncIterator[Out]:
        try:
            while (item := await feed.queue.get()) is not GONE:
                assert isinstance(item, chat_pb2.StreamEvent)
                yield item
        finally:
            cleaned.set()

    feed.queue.put_nowait(frame(1, "never sent"))
    stream = TurnStream("r1", "c1", relay(), feed=feed)
    response = StreamResponse(stream)
    await asyncio.wait_for(response.release(), 5)
    assert cleaned.is_set()
