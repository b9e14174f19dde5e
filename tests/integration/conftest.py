"""The whole system as real processes, against real RabbitMQ and Redis.

RabbitMQ and Redis come from testcontainers when a Docker engine is reachable, otherwise
from the servers installed on this machine (started if they are down). Each test session
uses its own namespace, so it never sees the traffic of a `make run` on the same broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from parley_dev.fake_providers import fake_provider_process
from parley_dev.infra import Infra, InfraUnavailable, provide
from parley_dev.rabbit_cluster import RabbitCluster, provide_rabbit_cluster
from parley_dev.stack import Stack
from tests.required import unavailable
from tests.support.api import api_client
from tests.support.keys import BOB_KEY, DEV_KEY
from tests.support.stacks import own_stack, stack_config

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
    env = {
        "PARLEY_API_KEYS": f'{{"bob": "{BOB_KEY}"}}',
        # About 1 s per demo answer: slow enough to act mid-stream, fast enough for CI.
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "50",
        "PARLEY_DEMO_TOKENS_PER_S": "40",
        "PARLEY_HEARTBEAT_S": "1",
        # Tests poll history quickly; the request rate limit has tests of its own.
        "PARLEY_REQUESTS_PER_MINUTE": "100000",
    }
    async with own_stack(stack_config(infra, tmp_path_factory.mktemp("stack"), "t", DEV_KEY, env)) as s:
        yield s


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(stack.base_url, DEV_KEY) as c:
        yield c


@pytest.fixture
async def bob(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(stack.base_url, BOB_KEY) as c:
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
