"""Adapters against the fake provider server on a real socket (uvicorn in this event loop):
timeouts, dropped connections and hang-ups need a body that arrives over time, which
httpx's ASGITransport cannot give (it buffers the whole response).
"""

from __future__ import annotations

import asyncio
import socket
import time
from contextlib import aclosing

import httpx
import pytest
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_dev.fake_providers import FakeProviderServer, SeenRequest, answer_tokens
from parley_worker.providers import Chunk, Provider, TextChunk, UsageReport
from parley_worker.providers.anthropic import AnthropicProvider
from parley_worker.providers.errors import ConnectionFailed, ProviderTimeout
from parley_worker.providers.gemini import GeminiProvider
from parley_worker.providers.http import StreamTimeouts
from parley_worker.providers.openai import OpenAIProvider
from tests.support.polling import eventually

KEY = SecretStr("sk-test-secret-key-123")
RELAXED = StreamTimeouts(connect_s=5, first_token_s=20, idle_s=20, total_s=60)


def make(name: str, base: str, client: httpx.AsyncClient, timeouts: StreamTimeouts = RELAXED) -> Provider:
    if name == "openai":
        return OpenAIProvider(name=name, base_url=f"{base}/v1", api_key=KEY, client=client, timeouts=timeouts)
    if name == "anthropic":
        return AnthropicProvider(name=name, base_url=base, api_key=KEY, client=client, timeouts=timeouts)
    return GeminiProvider(name=name, base_url=base, api_key=KEY, client=client, timeouts=timeouts)


def job(name: str, text: str) -> chat_pb2.ProviderJob:
    return chat_pb2.ProviderJob(
        provider=name,
        upstream_model=f"{name}-model",
        max_output_tokens=100_000,
        messages=[chat_pb2.PromptMessage(role="user", content=text)],
    )


@pytest.fixture(params=["openai", "anthropic", "gemini"])
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def upstream_closed(fake_provider: FakeProviderServer) -> None:
    """Until the fake provider saw its client (the worker) close the last request's connection."""

    async def closed() -> bool:
        return last(fake_provider).client_closed

    await eventually(closed, 10, "the upstream connection closed", interval_s=0.02)


def last(fake_provider: FakeProviderServer) -> SeenRequest:
    return fake_provider.app.requests[-1]


async def test_a_long_answer_over_a_real_socket(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    provider = make(name, fake_provider.url, provider_http)
    async with aclosing(provider.stream(job(name, 'tell me [[fake {"tokens": 5000}]]'))) as stream:
        chunks = [chunk async for chunk in stream]
    assert "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "".join(answer_tokens("tell me", 5000))
    assert chunks[-2] == UsageReport(last(fake_provider).input_tokens, 5000)
    assert last(fake_provider).completed and not last(fake_provider).client_closed


async def test_a_finished_answer_leaves_the_connection_reusable(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    provider = make(name, fake_provider.url, provider_http)
    for _ in range(2):
        async with aclosing(provider.stream(job(name, "hi"))) as stream:
            assert [chunk async for chunk in stream]
    first, second = fake_provider.app.requests
    assert first.client_port == second.client_port, "the second request needed a new connection"


async def test_a_connection_dropped_mid_stream_is_a_connection_error(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    provider = make(name, fake_provider.url, provider_http)
    received: list[Chunk] = []
    with pytest.raises(ConnectionFailed) as caught:
        async with aclosing(provider.stream(job(name, 'hi [[fake {"drop_after": 3}]]'))) as stream:
            async for chunk in stream:
                received.append(chunk)
    # Anthropic's early UsageReport (the prompt's tokens) aside, the three tokens arrived.
    assert [type(c) for c in received if not isinstance(c, UsageReport)] == [TextChunk] * 3
    assert caught.value.retryable and caught.value.fallback_worthy
    assert KEY.get_secret_value() not in str(caught.value)


async def test_no_first_token_in_time_times_out_and_closes_upstream(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    timeouts = StreamTimeouts(connect_s=5, first_token_s=0.3, idle_s=20, total_s=60)
    provider = make(name, fake_provider.url, provider_http, timeouts)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        async with aclosing(provider.stream(job(name, 'hi [[fake {"first_token_delay": 30}]]'))) as stream:
            async for _ in stream:
                pass
    assert caught.value.phase == "first_token"
    assert time.monotonic() - started < 15
    await upstream_closed(fake_provider)


async def test_a_stream_going_quiet_times_out(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    # The first token comes at once, the second only after 10 s.
    timeouts = StreamTimeouts(connect_s=5, first_token_s=20, idle_s=0.3, total_s=60)
    provider = make(name, fake_provider.url, provider_http, timeouts)
    received: list[Chunk] = []
    with pytest.raises(ProviderTimeout) as caught:
        async with aclosing(provider.stream(job(name, 'hi [[fake {"tokens_per_s": 0.1}]]'))) as stream:
            async for chunk in stream:
                received.append(chunk)
    assert caught.value.phase == "idle"
    assert sum(isinstance(c, TextChunk) for c in received) == 1
    await upstream_closed(fake_provider)


async def test_an_answer_over_its_total_time_times_out(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    timeouts = StreamTimeouts(connect_s=5, first_token_s=20, idle_s=20, total_s=0.5)
    provider = make(name, fake_provider.url, provider_http, timeouts)
    with pytest.raises(ProviderTimeout) as caught:
        async with aclosing(provider.stream(job(name, 'hi [[fake {"tokens_per_s": 20, "tokens": 1000}]]'))) as stream:
            async for _ in stream:
                pass
    assert caught.value.phase == "total"


async def test_closing_the_stream_early_closes_the_upstream_connection(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    provider = make(name, fake_provider.url, provider_http)
    stream = provider.stream(job(name, 'hi [[fake {"tokens_per_s": 5, "tokens": 500}]]'))
    async with aclosing(stream):  # type: ignore[type-var]
        async for chunk in stream:
            if isinstance(chunk, TextChunk):
                break
    await upstream_closed(fake_provider)
    assert not last(fake_provider).completed and last(fake_provider).tokens_sent < 500


async def test_cancelling_the_consumer_closes_the_upstream_connection(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    provider = make(name, fake_provider.url, provider_http)
    first_text = asyncio.Event()

    async def consume() -> None:
        async for chunk in provider.stream(job(name, 'hi [[fake {"tokens_per_s": 5, "tokens": 500}]]')):
            if isinstance(chunk, TextChunk):
                first_text.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_text.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await upstream_closed(fake_provider)


async def test_a_refused_connection_is_a_connection_error(name: str, provider_http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port any more.
    provider = make(name, f"http://127.0.0.1:{port}", provider_http)
    with pytest.raises(ConnectionFailed):
        async for _ in provider.stream(job(name, "hi")):
            pass


async def test_a_connect_timeout_names_its_phase(name: str) -> None:
    def never_connects(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(never_connects)) as client:
        with pytest.raises(ProviderTimeout) as caught:
            async for _ in make(name, "http://fake", client).stream(job(name, "hi")):
                pass
    assert caught.value.phase == "connect" and caught.value.retryable
