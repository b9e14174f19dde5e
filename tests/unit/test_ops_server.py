"""The operations port of the orchestrator and the provider worker: liveness, readiness, metrics."""

from __future__ import annotations

import asyncio

import httpx

from parley_common import metrics as _metrics  # noqa: F401  (registers Parley's series)
from parley_common.ops_server import OpsServer
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
            assert (await client.get("/healthz")).status_code == 200
            starting = await client.get("/readyz")
            assert starting.status_code == 503 and starting.json()["problems"] == {"service": "starting"}
            ops.mark_ready()
            assert (await client.get("/readyz")).json() == {"status": "ready", "service": "worker"}
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
