"""Health and readiness for every service, in one shape, and the operations port of a service
that has no HTTP server of its own (orchestrator, provider worker, history, media): Prometheus
metrics at /metrics, liveness at /healthz, readiness at /readyz.

Liveness means only "this process is alive": the operations port runs on the service's own
event loop, so /healthz answering at all shows the loop is not stuck (a blocked loop times the
probe out, and Kubernetes restarts the pod); it never looks at another service.

Readiness (`Readiness`, also behind the gateway's /readyz) means "this replica can take work
now": it is started and not stopping, and every *check* passes — the replica's own broker
connection, its own store. Shared *dependencies* (Redis, history, object storage) are only
reported: one of them down would turn every replica unready at once, and the load balancer
would answer 503 to everything; instead, the request that needs it gets a retryable error.
Every service answers the same JSON:

    {"service": "gateway", "status": "ready" | "unavailable",
     "problems": {"broker": "broker disconnected", ...},      # why not ready; {} when ready
     "dependencies": {"redis": "ok" | "redis: ConnectionError", ...}}

with 200 when ready, else 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from aio_pika.abc import AbstractConnection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

# A check returns None when all is well, else what is wrong (shown in the /readyz body).
ReadyCheck = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_S = 2.0


class Readiness:
    """The readiness of one replica: its state, the checks that gate it and the dependencies it
    only reports (see the module docstring)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.state = "starting"  # then "ready", then "stopping"
        self.checks: dict[str, ReadyCheck] = {}
        self.dependencies: dict[str, ReadyCheck] = {}

    def add_check(self, name: str, check: ReadyCheck) -> None:
        """`check` must pass for the replica to be ready (its own connection, its own store)."""
        self.checks[name] = check

    def add_dependency(self, name: str, check: ReadyCheck) -> None:
        """`check` is reported in /readyz but never makes the replica unready (a shared service)."""
        self.dependencies[name] = check

    def mark_ready(self) -> None:
        self.state = "ready"

    def mark_stopping(self) -> None:
        self.state = "stopping"

    async def report(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of /readyz: 200 when ready, 503 otherwise."""
        names = [*self.checks, *self.dependencies]
        results = await asyncio.gather(*(_run_check(c) for c in [*self.checks.values(), *self.dependencies.values()]))
        outcome = dict(zip(names, results, strict=True))
        problems: dict[str, str] = {}
        if self.state != "ready":
            problems["service"] = self.state
        for name in self.checks:
            problem = outcome[name]
            if problem is not None:
                problems[name] = problem
        dependencies = {name: outcome[name] or "ok" for name in self.dependencies}
        body = {
            "service": self.service,
            "status": "unavailable" if problems else "ready",
            "problems": problems,
            "dependencies": dependencies,
        }
        return (503 if problems else 200), body


async def _run_check(check: ReadyCheck) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # a failing check means not ready (or a dependency down), never a 500
        return type(exc).__name__


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the service's handlers stay in charge."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    def __init__(self, service: str, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.readiness = Readiness(service)
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/metrics", self._metrics),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
            ]
        )

    @property
    def checks(self) -> dict[str, ReadyCheck]:
        return self.readiness.checks

    def add_check(self, name: str, check: ReadyCheck) -> None:
        self.readiness.add_check(name, check)

    def add_dependency(self, name: str, check: ReadyCheck) -> None:
        self.readiness.add_dependency(name, check)

    def mark_ready(self) -> None:
        self.readiness.mark_ready()

    def mark_stopping(self) -> None:
        self.readiness.mark_stopping()

    async def ready_until(self, stop: asyncio.Event) -> None:
        """Ready (as far as its checks pass) until `stop` is set, then stopping: /readyz answers
        503 from then on, so that no new work is routed to a replica that drains."""
        self.mark_ready()
        await stop.wait()
        self.mark_stopping()

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, _: Request) -> JSONResponse:
        return JSONResponse(liveness(self.service))

    async def _readyz(self, _: Request) -> JSONResponse:
        status, body = await self.readiness.report()
        return JSONResponse(body, status_code=status)

    async def start(self) -> None:
        """Serve until stop(); no-op when the port is 0 (not configured)."""
        if not self.port:
            return
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # the port could not be bound: fail the start loudly
                raise RuntimeError(f"the operations port {self.port} did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def liveness(service: str) -> dict[str, str]:
    """The body of every service's /healthz: answering at all is the point."""
    return {"service": service, "status": "alive"}


def broker_check(connection: AbstractConnection) -> ReadyCheck:
    """Ready while the broker connection is up (aio-pika reconnects by itself meanwhile)."""

    async def check() -> str | None:
        return None if connection.connected.is_set() and not connection.is_closed else "broker disconnected"

    return check


def redis_check(redis: Redis) -> ReadyCheck:
    async def check() -> str | None:
        try:
            await redis.ping()
        except RedisError as exc:
            return f"redis: {type(exc).__name__}"
        return None

    return check


__all__ = ["OpsServer", "Readiness", "ReadyCheck", "broker_check", "liveness", "redis_check"]
