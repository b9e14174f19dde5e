"""`make run`: the whole system on this machine, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .cassandra import provide_cassandra
from .infra import Infra, InfraUnavailable, provide
from .stack import Stack, StackConfig

VAR = Path.cwd() / "var"


class DevRunSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")
    port: int = Field(default=8080, ge=1, le=65535)
    dev_api_key: SecretStr | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "parley"
    # cassandra: a local Cassandra node is started (unless PARLEY_CASSANDRA_CONTACT_POINTS names one).
    history_store: Literal["sqlite", "cassandra"] = "sqlite"
    cassandra_keyspace: str = Field(default="parley", pattern=r"^[a-z][a-z0-9_]{0,47}$")


def main() -> None:
    settings = DevRunSettings()
    key = settings.dev_api_key.get_secret_value() if settings.dev_api_key else "pk_dev_" + secrets.token_urlsafe(24)
    extra_env = {k: v for k, v in os.environ.items() if k.startswith("PARLEY_")}
    try:
        with contextlib.ExitStack() as started:
            infra = started.enter_context(provide(settings.amqp_url, settings.redis_url, prefer_containers=False))
            if settings.history_store == "cassandra" and "PARLEY_CASSANDRA_CONTACT_POINTS" not in os.environ:
                print("starting a local Cassandra node (var/cassandra; the first start fetches its jars)…", flush=True)
                node = started.enter_context(
                    provide_cassandra(VAR / "cassandra", prefer_containers=False, durable=True)
                )
                extra_env = {**node.env(settings.cassandra_keyspace), **extra_env}
                extra_env["PARLEY_CASSANDRA_CONTACT_POINTS"] = ",".join(node.contact_points)
            asyncio.run(_run(infra, settings, key, extra_env))
    except InfraUnavailable as exc:
        sys.exit(f"cannot start Parley: {exc}")


async def _run(infra: Infra, settings: DevRunSettings, key: str, extra_env: dict[str, str]) -> None:
    workdir = VAR
    stack = Stack(
        StackConfig(
            infra=infra,
            namespace=settings.namespace,
            workdir=workdir,
            dev_api_key=key,
            gateway_port=settings.port,
            # Everything PARLEY_* the user set (demo pace, models, …) reaches the services.
            extra_env=extra_env,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
    except (TimeoutError, RuntimeError) as exc:
        await stack.stop()
        sys.exit(f"Parley did not start: {exc}\nlogs: {workdir / 'log'}")
    url = stack.base_url
    print(
        f"""
Parley is running at {url}   (service logs: {workdir / "log"})
  dev API key: {key}

Stream an answer:
  CID=$(curl -s -X POST {url}/v1/conversations -H 'Authorization: Bearer {key}' \\
        -H 'Content-Type: application/json' -d '{{"title": "hello"}}' \\
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -N -X POST {url}/v1/conversations/$CID/messages -H 'Authorization: Bearer {key}' \\
        -H 'Content-Type: application/json' -d '{{"content": "Hello, Parley!"}}'

Ctrl-C stops everything.""",
        flush=True,
    )
    stopped = asyncio.create_task(stop.wait())
    supervisor = Supervisor(stack)
    while not stop.is_set():
        await asyncio.wait([stopped], timeout=0.5)
        if not stop.is_set():
            supervisor.check(time.monotonic())
    print("stopping…", flush=True)
    await stack.stop()


class Supervisor:
    """Keeps `make run`'s services up: a service that exits is started again after a backoff
    (1 s, doubling to 30 s; back to 1 s once it has stayed up for a minute), with a log line
    saying what exited, how, when it comes back and where its log is."""

    FIRST_DELAY_S = 1.0
    MAX_DELAY_S = 30.0
    STABLE_AFTER_S = 60.0

    def __init__(self, stack: Stack, say: Callable[[str], None] | None = None) -> None:
        self.stack = stack
        self.say = say or (lambda line: print(line, flush=True))
        now = time.monotonic()
        self.started_at = {name: now for name in stack.processes}
        self.delay_s = {name: self.FIRST_DELAY_S for name in stack.processes}
        self.restart_at: dict[str, float] = {}

    def check(self, now: float) -> None:
        for name, process in list(self.stack.processes.items()):
            if name in self.restart_at or process.poll() is None:
                continue
            if now - self.started_at.get(name, now) >= self.STABLE_AFTER_S:
                self.delay_s[name] = self.FIRST_DELAY_S
            delay = self.delay_s.get(name, self.FIRST_DELAY_S)
            self.restart_at[name] = now + delay
            self.say(
                f"{name} exited with status {process.returncode}; restarting it in {delay:.0f} s "
                f"(log: {self.stack.workdir / 'log' / f'{name}.log'})"
            )
        for name, when in list(self.restart_at.items()):
            if now < when:
                continue
            del self.restart_at[name]
            process = self.stack.restart_service(name)
            self.started_at[name] = now
            self.delay_s[name] = min(self.delay_s.get(name, self.FIRST_DELAY_S) * 2, self.MAX_DELAY_S)
            self.say(f"{name} restarted (pid {process.pid})")


if __name__ == "__main__":
    main()
