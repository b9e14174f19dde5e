"""Fixtures that test modules of more than one folder share; tests/conftest.py makes them known
to every test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from parley_dev.fake_providers import FakeProviderServer
from parley_dev.infra import ensure_local

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    """A client of the local Redis server (started if it is down, and left running). The
    integration tests' own `redis` fixtures point at the session's server instead."""
    ensure_local(LOCAL_REDIS_URL)
    client = Redis.from_url(LOCAL_REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def fake_provider() -> AsyncIterator[FakeProviderServer]:
    """The fake provider server on a real socket, in this event loop (one per test module)."""
    async with FakeProviderServer() as server:
        yield server


@pytest.fixture
async def provider_http(fake_provider: FakeProviderServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a provider adapter; the fake provider's records start empty."""
    fake_provider.app.requests.clear()
    fake_provider.app.attempts.clear()
    async with httpx.AsyncClient() as client:
        yield client
