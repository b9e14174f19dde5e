"""Running a service process: the event loop (uvloop), signals, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import uvloop

from parley_common.observability.logs import setup_logging
from parley_common.observability.telemetry import setup_telemetry, shutdown_telemetry
from parley_common.service.ops_server import OpsServer
from parley_common.settings import CommonSettings

log = logging.getLogger(__name__)


def run_service(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `serve(stop)` on uvloop until it returns; SIGTERM and SIGINT set `stop`.

    `serve` stops taking new work when `stop` is set, finishes or hands back in-flight work
    within its grace period, then returns. uvloop runs the loop and its sockets in C (libuv)
    instead of asyncio's Python selector loop: a turn is mostly small socket reads and writes
    (the broker, Redis, gRPC, providers). The gateway's uvicorn picks uvloop by itself.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)
        log.info("stopped")
        shutdown_telemetry()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def start_ops(service: str, settings: CommonSettings) -> OpsServer:
    """What a service process does first: logs and traces named for `service`, then its
    operations port (/healthz, /metrics, and /readyz answering 503 until `mark_ready`) serving."""
    setup_logging(service, settings.log_level)
    setup_telemetry(service, settings.otlp_endpoint)
    ops = OpsServer(service, settings.metrics_host, settings.metrics_port)
    await ops.start()
    return ops


class InFlight:
    """Counts work in progress so that shutdown can wait for it to finish."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> InFlight:
        self._count += 1
        self._idle.clear()
        return self

    def __exit__(self, *exc: object) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight; False when the timeout came first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False
