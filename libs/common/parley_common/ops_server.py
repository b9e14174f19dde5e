"""The operations port of a service that has no HTTP server of its own (orchestrator, provider
worker): Prometheus metrics at /metrics, liveness at /healthz, readiness at /readyz.

It runs on the service's own event loop, so /healthz answering at all shows the loop is not
stuck (a blocked loop times the probe out, and Kubernetes restarts the pod). /readyz answers
200 only while the service consumes work and every readiness check passes (the broker
connection is open, Redis answers); 503 with the reasons otherwise, and from the moment a
shutdown begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

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
        self.checks: dict[str, ReadyCheck] = {}
        self.state = "starting"  # then "ready", then "stopping"
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(
            routes=[
                Route("/metrics", self._metrics),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
            ]
        )

    def add_check(self, name: str, check: ReadyCheck) -> None:
        self.checks[name] = check

    def mark_ready(self) -> None:
        self.state = "ready"

    def mark_stopping(self) -> None:
        self.state = "stopping"

    async def _metrics(self, _: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "service": self.service})

    async def _readyz(self, _: Request) -> JSONResponse:
        problems: dict[str, str] = {}
        if self.state != "ready":
            problems["service"] = self.state
        for name, check in self.checks.items():
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S):
                    problem = await check()
            except TimeoutError:
                problem = f"no answer within {CHECK_TIMEOUT_S:g} s"
            except Exception as exc:  # a failing check means not ready, never a 500
                problem = type(exc).__name__
            if problem is not None:
                problems[name] = problem
        if problems:
            return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "service": self.service})

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


__all__ = ["OpsServer", "ReadyCheck", "broker_check", "redis_check"]
