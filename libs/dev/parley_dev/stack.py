"""The five Parley services as real processes, configured to share one namespace.

Object storage: the infra's S3 server, or PARLEY_S3_ENDPOINT from `extra_env`, or else a
SeaweedFS the stack starts itself in `<workdir>/s3` and stops with the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import aio_pika
import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley_common.messaging.amqp import connect
from parley_common.messaging.topology import Topology
from parley_common.models import DEFAULT_MODELS_FILE, ModelRegistry

from .infra import Infra, LocalS3, S3Endpoint, free_port, terminate

MODULES = {
    "history": "parley_history",
    "media": "parley_media",
    "orchestrator": "parley_orchestrator",
    "provider-worker": "parley_worker",
    "gateway": "parley_gateway",
}


def origin_of(url: str) -> str:
    """`http://127.0.0.1:8333` of `http://127.0.0.1:8333/some/path`."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class StackConfig:
    infra: Infra
    namespace: str
    workdir: Path
    dev_api_key: str
    gateway_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    # False (tests): the local S3 server's data is thrown away, so it is killed at the stop
    # instead of drained (2 s a stack, 20 s when its volume server hangs on the way out).
    keeps_s3_data: bool = True


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.workdir = config.workdir
        (self.workdir / "log").mkdir(parents=True, exist_ok=True)
        self.gateway_port = config.gateway_port or free_port()
        self.history_port = free_port()
        self.media_port = free_port()
        # Prometheus endpoints of the services that have no HTTP server of their own.
        self.metrics_ports = {
            "orchestrator": free_port(),
            "provider-worker": free_port(),
            "history": free_port(),
            "media": free_port(),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # How each service exited when the stack was stopped (0 = a clean SIGTERM shutdown).
        self.exit_codes: dict[str, int | None] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.s3: S3Endpoint | None = config.infra.s3
        self.local_s3: LocalS3 | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def env_for(self, service: str, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env.update(
            PARLEY_NAMESPACE=self.config.namespace,
            PARLEY_AMQP_URL=self.config.infra.amqp_url,
            PARLEY_REDIS_URL=self.config.infra.redis_url,
            PARLEY_HISTORY_GRPC_PORT=str(self.history_port),
            PARLEY_HISTORY_GRPC_TARGET=f"127.0.0.1:{self.history_port}",
            PARLEY_HISTORY_SQLITE_PATH=str(self.workdir / "history.sqlite3"),
            PARLEY_MEDIA_GRPC_PORT=str(self.media_port),
            PARLEY_MEDIA_GRPC_TARGET=f"127.0.0.1:{self.media_port}",
            PARLEY_PORT=str(self.gateway_port),
            PARLEY_DEV_API_KEY=self.config.dev_api_key,
            PYTHONUNBUFFERED="1",
        )
        if service in self.metrics_ports:
            env.update(PARLEY_METRICS_PORT=str(self.metrics_ports[service]))
        if self.s3 is not None:
            env.update(
                PARLEY_S3_ENDPOINT=self.s3.url,
                PARLEY_S3_ACCESS_KEY=self.s3.access_key,
                PARLEY_S3_SECRET_KEY=self.s3.secret_key,
                PARLEY_S3_REGION=self.s3.region,
            )
        env.update(self.config.extra_env)
        if service == "gateway" and "PARLEY_IMAGE_ORIGINS" not in env:
            # The web client shows images from where the media service presigns their URLs.
            presigned_for = env.get("PARLEY_S3_PUBLIC_ENDPOINT") or env.get("PARLEY_S3_ENDPOINT")
            if presigned_for:
                env["PARLEY_IMAGE_ORIGINS"] = json.dumps([origin_of(presigned_for)])
        env.update(overrides)
        return env

    def start_service(
        self, service: str, port: int | None = None, replica: str | None = None, **overrides: str
    ) -> subprocess.Popen[bytes]:
        """Start one service (again); `port` starts an extra gateway on another port, `replica`
        another process of any service on the same namespace (named `<service>@<replica>`, with
        an operations port of its own)."""
        name = service if port is None else f"{service}@{port}"
        if port is not None:
            overrides["PARLEY_PORT"] = str(port)
        if replica is not None:
            name = f"{service}@{replica}"
            if service in self.metrics_ports:
                overrides.setdefault("PARLEY_METRICS_PORT", str(free_port()))
        log = open(self.workdir / "log" / f"{name}.log", "ab")
        self._logs[name] = log
        process = subprocess.Popen(
            [sys.executable, "-m", MODULES[service]],
            env=self.env_for(service, **overrides),
            stdout=log,
            stderr=log,
            cwd=self.workdir,
        )
        self.processes[name] = process
        return process

    def restart_service(self, name: str) -> subprocess.Popen[bytes]:
        """Start again a service (plain name, as `start()` starts it) whose process has exited."""
        old = self.processes.pop(name, None)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"{name} is still running (pid {old.pid})")
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()
        return self.start_service(name)

    def stop_service(self, name: str, timeout_s: float = 30.0) -> int | None:
        process = self.processes.pop(name, None)
        if process is None:
            return None
        code = terminate(process, timeout_s)
        self._logs.pop(name).close()
        return code

    def kill_service(self, name: str) -> None:
        process = self.processes.pop(name)
        process.kill()
        process.wait()
        self._logs.pop(name).close()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / "log" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, timeout_s: float = 60.0) -> None:
        if self.s3 is None and "PARLEY_S3_ENDPOINT" not in self.config.extra_env:
            self.local_s3 = LocalS3(self.workdir / "s3", self.workdir / "log" / "s3.log")
            self.s3 = await asyncio.to_thread(self.local_s3.start)
        if self.env_for("history").get("PARLEY_HISTORY_STORE") == "cassandra":
            await self.migrate_history(timeout_s)
        for service in MODULES:
            self.start_service(service)
        await self.wait_ready(timeout_s)

    async def migrate_history(self, timeout_s: float = 120.0) -> None:
        """`python -m parley_history migrate` with the history service's settings, as a
        deployment's migration Job would run it before the service starts."""
        log = self.workdir / "log" / "history-migrate.log"
        command = [sys.executable, "-m", MODULES["history"], "migrate"]
        with log.open("ab") as out:
            done = await asyncio.to_thread(
                subprocess.run, command, env=self.env_for("history"), stdout=out, stderr=out, cwd=self.workdir,
                timeout=timeout_s, check=False,
            )  # fmt: skip
        code = done.returncode
        if code != 0:
            raise RuntimeError(f"history migrate exited with {code}:\n{self.log_tail('history-migrate')}")

    async def wait_ready(self, timeout_s: float = 60.0, gateway_url: str | None = None) -> None:
        """Poll until every service answers: gateway /readyz, gRPC health, queue consumers.
        (The gateway's readiness does not include history's: history is asked itself.)"""
        deadline = time.monotonic() + timeout_s
        topology = Topology(self.config.namespace)
        pending = {"gateway", "history", "media", "orchestrator", "provider-worker"}
        async with httpx.AsyncClient(timeout=2.0) as client:
            connection = await connect(self.config.infra.amqp_url, timeout_s)
            try:
                while pending:
                    self._check_alive()
                    if "gateway" in pending:
                        try:
                            reply = await client.get(f"{gateway_url or self.base_url}/readyz")
                            if reply.status_code == 200:
                                pending.discard("gateway")
                        except httpx.HTTPError:
                            pass
                    if "media" in pending and await _grpc_serving(f"127.0.0.1:{self.media_port}"):
                        pending.discard("media")
                    if "history" in pending and await _grpc_serving(f"127.0.0.1:{self.history_port}"):
                        pending.discard("history")
                    for service, queue in (
                        ("orchestrator", topology.requests_queue),
                        ("provider-worker", topology.provider_queue(self.worker_providers()[0])),
                    ):
                        if service in pending and await _consumers(connection, queue) > 0:
                            pending.discard(service)
                    if not pending:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"services not ready after {timeout_s:.0f}s: {sorted(pending)}")
                    await asyncio.sleep(0.1)
            finally:
                await connection.close()

    def worker_providers(self) -> list[str]:
        """The providers whose queues the stack's worker consumes (PARLEY_WORKER_PROVIDERS, a
        JSON list as the worker's settings read it; the worker's default is the demo provider)."""
        configured = self.env_for("provider-worker").get("PARLEY_WORKER_PROVIDERS")
        if not configured:
            return ["demo"]
        providers = json.loads(configured)
        if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
            raise ValueError(f"PARLEY_WORKER_PROVIDERS must be a non-empty JSON list of names, not {configured!r}")
        return providers

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")

    async def stop(self) -> dict[str, int | None]:
        # The edge first, the system of record last, as a rolling shutdown would.
        order = sorted(self.processes, key=lambda n: list(MODULES).index(n.split("@")[0]), reverse=True)
        codes = {name: await asyncio.to_thread(self.stop_service, name) for name in order}
        self.exit_codes.update(codes)
        if self.local_s3 is not None:
            await asyncio.to_thread(self.local_s3.stop, 20.0 if self.config.keeps_s3_data else 0.0)
            self.local_s3 = None
        await self._delete_queues()
        return codes

    async def _delete_queues(self) -> None:
        """Delete the namespace's durable queues: quorum queues live until deleted, and a
        broker that keeps every test run's queues grows slow to start and to answer."""
        models_file = self.env_for("provider-worker").get("PARLEY_MODELS_FILE")
        try:
            registry = ModelRegistry.load(self.workdir / models_file if models_file else DEFAULT_MODELS_FILE)
            providers = list(registry.providers)
        except (OSError, ValueError):
            providers = ["demo"]
        names = Topology(self.config.namespace).durable_queues(providers)
        try:
            connection = await connect(self.config.infra.amqp_url, 10)
        except (OSError, aio_pika.exceptions.AMQPError):
            return  # the broker is gone (a test stopped it): nothing to clean
        try:
            for name in names:
                channel = await connection.channel()
                try:
                    await channel.queue_delete(name)
                except aio_pika.exceptions.AMQPError:
                    pass
                finally:
                    if not channel.is_closed:
                        await channel.close()
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def running(config: StackConfig, timeout_s: float = 60.0) -> AsyncIterator[Stack]:
    """The stack started and ready; stopped afterwards (also when starting failed)."""
    stack = Stack(config)
    try:
        await stack.start(timeout_s)
    except BaseException:
        await stack.stop()
        raise
    try:
        yield stack
    finally:
        await stack.stop()


async def _consumers(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.consumer_count or 0)
    except aio_pika.exceptions.ChannelClosed:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


async def _grpc_serving(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
