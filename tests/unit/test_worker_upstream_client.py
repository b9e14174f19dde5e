"""The worker's HTTP client to providers (providers/http.py: upstream_client, ShardedTransport)
against the fake provider server on a real socket: a quiet worker reuses one kept-alive
connection, a busy one spreads its streams over several pools, and every stream closed
counts as closed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import aclosing

import pytest
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_dev.fake_providers import FakeProviderServer
from parley_worker.providers import TextChunk
from parley_worker.providers.errors import ConnectionFailed
from parley_worker.providers.http import ShardedTransport, StreamTimeouts, upstream_client
from parley_worker.providers.openai import OpenAIProvider

RELAXED = StreamTimeouts(connect_s=5, first_token_s=20, idle_s=20, total_s=60)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


def job(text: str) -> chat_pb2.ProviderJob:
    return chat_pb2.ProviderJob(
        provider="openai",
        upstream_model="m",
        max_output_tokens=1000,
        messages=[chat_pb2.PromptMessage(role="user", content=text)],
    )


async def answer(provider: OpenAIProvider, text: str) -> str:
    async with aclosing(provider.stream(job(text))) as stream:
        return "".join([c.text async for c in stream if isinstance(c, TextChunk)])


async def test_a_quiet_worker_reuses_one_connection_and_a_busy_one_spreads_over_its_pools(
    server: FakeProviderServer,
) -> None:
    server.app.requests.clear()
    client = upstream_client(total_timeout_s=60, connect_timeout_s=5, max_streams=100)
    transport = client._transport
    assert isinstance(transport, ShardedTransport) and len(transport.open) == 8
    provider = OpenAIProvider(
        name="openai", base_url=f"{server.url}/v1", api_key=SecretStr("k" * 20), client=client, timeouts=RELAXED
    )
    try:
        for _ in range(3):
            assert await answer(provider, "hi")
        ports = {r.client_port for r in server.app.requests}
        assert len(ports) == 1, "one after the other, the requests share one connection"
        assert transport.open == [0] * 8

        server.app.requests.clear()
        slow = 'go [[fake {"tokens": 5, "tokens_per_s": 20}]]'
        texts = await asyncio.gather(*(answer(provider, slow) for _ in range(16)))
        assert all(texts)
        assert len({r.client_port for r in server.app.requests}) == 16
        assert transport.open == [0] * 8, "every stream closed counts as closed"
    finally:
        await client.aclose()


async def test_a_request_that_never_connected_does_not_count_as_open() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    client = upstream_client(total_timeout_s=60, connect_timeout_s=5, max_streams=100)
    transport = client._transport
    assert isinstance(transport, ShardedTransport)
    provider = OpenAIProvider(
        name="openai", base_url=f"http://127.0.0.1:{port}/v1", api_key=None, client=client, timeouts=RELAXED
    )
    try:
        with pytest.raises(ConnectionFailed):
            await answer(provider, "hi")
        assert transport.open == [0] * 8
    finally:
        await client.aclose()
