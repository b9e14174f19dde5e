"""The operations port of the orchestrator and the provider worker: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio

import httpx

from parley_common.observability import metrics as _metrics  # noqa: F401  (registers Parley's series)
from parley_common.service.ops_server import OpsServer
from parley_dev.infra import free_port


async def test_ready_only_while_serving_and_every_check_passes() -> None:
    broker_up = True

    async def broker() -> str | None:
        return None if broker_up else "broker disconnected"

    async def slow() -> str | None:
        await asyncio.sleep(10)
        return None

    ops = OpsServer("worker", "127.0.0.1", free_port())
    ops.add_check("broker", broker)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as client:
            assert (await client.get("/healthz")).json() == {"service": "worker", "status": "alive"}
            starting = await client.get("/readyz")
            assert starting.status_code == 503 and starting.json()["problems"] == {"service": "starting"}
            ops.mark_ready()
            assert (await client.get("/readyz")).json() == {
                "service": "worker",
                "status": "ready",
                "problems": {},
                "dependencies": {},
            }
            broker_up = False
            down = await client.get("/readyz")
            assert down.status_code == 503 and down.json()["problems"] == {"broker": "broker disconnected"}
            broker_up = True
            ops.add_check("stuck", slow)
            stuck = await client.get("/readyz", timeout=10)
            assert stuck.status_code == 503 and stuck.json()["problems"]["stuck"].startswith("no answer within")
            del ops.checks["stuck"]
            ops.mark_stopping()
            stopping = await client.get("/readyz")
            assert stopping.status_code == 503 and stopping.json()["problems"] == {"service": "stopping"}
            assert (await client.get("/healthz")).status_code == 200, "alive while it drains"
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200 and "parley_active_streams" in metrics.text
    finally:
        await ops.stop()


async def test_port_zero_serves_nothing() -> None:
    ops = OpsServer("orchestrator", "127.0.0.1", 0)
    await ops.start()
    await ops.stop()
    assert ops._server is None


async def test_a_shared_dependency_down_is_reported_but_never_makes_the_replica_unready() -> None:
    redis_up = False

    async def redis() -> str | None:
        return None if redis_up else "redis: ConnectionError"

    async def broken() -> str | None:
        raise RuntimeError("a bug in a check")

    ops = OpsServer("orchestrator", "127.0.0.1", free_port())
    ops.add_dependency("redis", redis)
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as client:
            ops.mark_ready()
            down = await client.get("/readyz")
            assert down.status_code == 200
            assert down.json() == {
                "service": "orchestrator",
                "status": "ready",
                "problems": {},
                "dependencies": {"redis": "redis: ConnectionError"},
            }
            redis_up = True
            assert (await client.get("/readyz")).json()["dependencies"] == {"redis": "ok"}
            ops.add_dependency("broken", broken)
            reported = await client.get("/readyz")
            assert reported.status_code == 200 and reported.json()["dependencies"]["broken"] == "RuntimeError"
    finally:
        await ops.stop()
