"""The whole system as real processes, against real RabbitMQ and Redis.

RabbitMQ and Redis come from testcontainers when a Docker engine is reachable, otherwise
from the servers installed on this machine (started if they are down). Each test session
uses its own namespace, so it never sees the traffic of a `make run` on the same broker.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from parley_dev.fake_providers import fake_provider_process
from parley_dev.infra import Infra, InfraUnavailable, provide
from parley_dev.rabbit_cluster import RabbitCluster, provide_rabbit_cluster
from parley_dev.stack import Stack, StackConfig, running
from tests.required import unavailable

DEV_KEY = "pk_test_" + secrets.token_urlsafe(18)
BOB_KEY = "pk_test_bob_" + secrets.token_urlsafe(18)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with provide() as found:
        yield found


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three RabbitMQ nodes (Debian's rabbitmq-server) clustered on loopback, started on first
    use, stopped after the session. A test that stops or kills nodes calls `restore()` before it
    ends. Missing, its tests skip — or fail under PARLEY_REQUIRE."""
    stack = contextlib.ExitStack()
    try:
        cluster = stack.enter_context(provide_rabbit_cluster(tmp_path_factory.mktemp("rabbit-cluster")))
    except InfraUnavailable as exc:
        stack.close()
        unavailable("rabbitmq-cluster", f"no RabbitMQ cluster: {exc}")
    with stack:
        yield cluster


@pytest.fixture(scope="session")
async def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack")
    config = StackConfig(
        infra=infra,
        namespace="t" + uuid.uuid4().hex[:10],
        workdir=workdir,
        dev_api_key=DEV_KEY,
        extra_env={
            "PARLEY_API_KEYS": f'{{"bob": "{BOB_KEY}"}}',
            # About 1 s per demo answer: slow enough to act mid-stream, fast enough for CI.
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "50",
            "PARLEY_DEMO_TOKENS_PER_S": "40",
            "PARLEY_HEARTBEAT_S": "1",
            # Tests poll history quickly; the request rate limit has tests of its own.
            "PARLEY_REQUESTS_PER_MINUTE": "100000",
        },
    )
    async with running(config) as s:
        yield s
    # Every service must stop cleanly on SIGTERM.
    assert all(code == 0 for code in s.exit_codes.values()), f"unclean exits: {s.exit_codes}"


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {DEV_KEY}"}, timeout=30.0
    ) as c:
        yield c


@pytest.fixture
async def bob(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {BOB_KEY}"}, timeout=30.0
    ) as c:
        yield c


@pytest.fixture
async def conversation(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/conversations", json={"title": "test"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The fake provider server as a real process, one per test module that asks (its URL)."""
    with fake_provider_process(tmp_path_factory.mktemp("fake") / "fake.log") as url:
        yield url


@pytest.fixture
async def seen(fake: str) -> AsyncIterator[httpx.AsyncClient]:
    """The fake provider's record of the calls it received (cleared per test)."""
    async with httpx.AsyncClient(base_url=fake, timeout=10) as client:
        await client.delete("/_fake/requests")
        yield client


async def provider_calls(seen: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every call the fake provider received since the test began, oldest first."""
    return list((await seen.get("/_fake/requests")).json())


async def cache_entries(stack: Stack, infra: Infra) -> int:
    """How many answers the stack's response cache holds."""
    redis = Redis.from_url(infra.redis_url)
    try:
        return len([k async for k in redis.scan_iter(f"{stack.config.namespace}:response-cache:*")])
    finally:
        await redis.aclose()
