"""What the Kubernetes probes read, with a shared dependency down (issue 23).

Liveness (`/healthz`) means only "this process is alive"; readiness (`/readyz`, gRPC health)
means "this replica can take work": its own broker connection, not a service every replica
shares. With object storage, Redis or history down, every probe must keep passing — otherwise
each replica turns unready (or is restarted) at once and the edge answers 503 to everything —
and the request that needs the missing service gets a typed, retryable error instead.
Every service answers /readyz in the same JSON shape.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from parley_dev.infra import Infra, LocalS3, free_port
from parley_dev.stack import Stack
from tests.support.keys import DEV_KEY
from tests.support.polling import eventually
from tests.support.stacks import own_stack, stack_config

READY_KEYS = {"service", "status", "problems", "dependencies"}


async def grpc_health(port: int) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@pytest.fixture(scope="module")
async def s3_and_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[LocalS3, Stack]]:
    """A stack of its own whose object storage this module may stop."""
    workdir: Path = tmp_path_factory.mktemp("probes")
    s3 = LocalS3(workdir / "s3", workdir / "s3.log")
    endpoint = await asyncio.to_thread(s3.start)
    env = {
        "PARLEY_S3_ENDPOINT": endpoint.url,
        "PARLEY_S3_ACCESS_KEY": endpoint.access_key,
        "PARLEY_S3_SECRET_KEY": endpoint.secret_key,
        "PARLEY_S3_REGION": endpoint.region,
        # The store's failure is met at once, not after the client's retries.
        "PARLEY_S3_TIMEOUT_S": "2",
    }
    try:
        async with own_stack(stack_config(infra, workdir / "stack", "t", DEV_KEY, env), clean_exit=False) as stack:
            yield s3, stack
    finally:
        await asyncio.to_thread(s3.stop)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def ready_shape(body: dict[str, Any], service: str) -> None:
    assert set(body) == READY_KEYS and body["service"] == service, body


async def test_every_service_answers_readiness_in_one_shape(s3_and_stack: tuple[LocalS3, Stack]) -> None:
    _, stack = s3_and_stack
    async with httpx.AsyncClient(timeout=10) as client:
        gateway = await client.get(f"{stack.base_url}/readyz")
        assert gateway.status_code == 200, gateway.text
        ready_shape(gateway.json(), "gateway")
        assert gateway.json()["dependencies"] == {"redis": "ok", "history": "ok"}
        for service, port in stack.metrics_ports.items():
            ops = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert ops.status_code == 200, (service, ops.text)
            ready_shape(ops.json(), service)
            assert ops.json()["status"] == "ready" and ops.json()["problems"] == {}
            alive = await client.get(f"http://127.0.0.1:{port}/healthz")
            assert alive.json() == {"service": service, "status": "alive"}


async def test_an_object_storage_outage_restarts_nothing_and_fails_only_uploads(
    s3_and_stack: tuple[LocalS3, Stack],
) -> None:
    s3, stack = s3_and_stack
    media_ops = f"http://127.0.0.1:{stack.metrics_ports['media']}"
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {DEV_KEY}"}) as client:
        assert (await client.get(f"{media_ops}/readyz")).json()["dependencies"] == {"object_storage": "ok"}
        await asyncio.to_thread(s3.stop)

        async def storage_reported_down() -> bool:
            body = (await client.get(f"{media_ops}/readyz")).json()
            return bool(body["dependencies"]["object_storage"] != "ok")

        await eventually(storage_reported_down, 30, "media's /readyz reports object storage down")
        # Liveness: the process is alive. Readiness: this replica takes work; the store is
        # shared by every replica, so it is reported, not gating.
        assert (await client.get(f"{media_ops}/healthz")).status_code == 200
        ready = await client.get(f"{media_ops}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
        assert await grpc_health(stack.media_port) == "SERVING"
        # The request that needs the store gets a typed, retryable error.
        upload = await client.post(f"{stack.base_url}/v1/media", files={"file": ("dot.png", png(), "image/png")})
        assert upload.status_code == 503, upload.text
        assert upload.json()["error"]["code"] == "storage_unavailable", upload.text
        # Readiness stays so: two seconds are a few of the periodic store checks, any of which
        # could turn it (nothing marks a check that changed nothing).
        await asyncio.sleep(2)
        assert await grpc_health(stack.media_port) == "SERVING"
        assert (await client.get(f"{stack.base_url}/readyz")).status_code == 200


async def test_a_gateway_stays_ready_without_redis(s3_and_stack: tuple[LocalS3, Stack]) -> None:
    _, stack = s3_and_stack
    port = free_port()
    # A gateway of its own whose Redis never answers (a failover that has not finished).
    stack.start_service("gateway", port=port, PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {DEV_KEY}"}) as client:

            async def answers() -> bool:
                try:
                    return (await client.get(f"{url}/readyz")).status_code in (200, 503)
                except httpx.TransportError:
                    return False

            await eventually(answers, 60, "the extra gateway answers")
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            ready_shape(body, "gateway")
            assert body["problems"] == {} and body["dependencies"]["redis"] != "ok", body
            assert (await client.get(f"{url}/healthz")).status_code == 200
            # What needs Redis (every API call counts against the user's request rate) answers
            # a typed 503 that a client retries.
            created = await client.post(f"{url}/v1/conversations", json={"title": "no redis"})
            assert created.status_code == 503 and created.json()["error"]["code"] == "unavailable", created.text
    finally:
        assert stack.stop_service(f"gateway@{port}") == 0


async def test_gateways_stay_ready_while_history_restarts(s3_and_stack: tuple[LocalS3, Stack]) -> None:
    _, stack = s3_and_stack
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {DEV_KEY}"}) as client:
        assert stack.stop_service("history") == 0
        try:
            ready = await client.get(f"{stack.base_url}/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["dependencies"]["history"] != "ok", ready.text
            listed = await client.get(f"{stack.base_url}/v1/conversations")
            assert listed.status_code == 503 and listed.json()["error"]["code"] == "unavailable", listed.text
        finally:
            stack.start_service("history")
            await stack.wait_ready()

        async def listed_again() -> bool:
            return (await client.get(f"{stack.base_url}/v1/conversations")).status_code == 200

        # The gateway dials history again within its reconnect back-off (at most 5 s).
        await eventually(listed_again, 30, "the gateway lists conversations again")
