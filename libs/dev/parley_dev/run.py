"""`make run`: the whole system on this machine, until Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .infra import Infra, InfraUnavailable, provide
from .stack import Stack, StackConfig


class DevRunSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")
    port: int = Field(default=8080, ge=1, le=65535)
    dev_api_key: SecretStr | None = None
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "parley"


def main() -> None:
    settings = DevRunSettings()
    key = settings.dev_api_key.get_secret_value() if settings.dev_api_key else "pk_dev_" + secrets.token_urlsafe(24)
    try:
        with provide(settings.amqp_url, settings.redis_url, prefer_containers=False) as infra:
            asyncio.run(_run(infra, settings, key))
    except InfraUnavailable as exc:
        sys.exit(f"cannot start Parley: {exc}")


async def _run(infra: Infra, settings: DevRunSettings, key: str) -> None:
    workdir = Path.cwd() / "var"
    stack = Stack(
        StackConfig(
            infra=infra,
            namespace=settings.namespace,
            workdir=workdir,
            dev_api_key=key,
            gateway_port=settings.port,
            # Everything PARLEY_* the user set (demo pace, models, …) reaches the services.
            extra_env={k: v for k, v in os.environ.items() if k.startswith("PARLEY_")},
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
    while not stop.is_set():
        await asyncio.wait([stopped], timeout=1.0)
        dead = [name for name, p in stack.processes.items() if p.poll() is not None]
        if dead:
            print(f"service exited: {', '.join(dead)}; stopping (see {workdir / 'log'})", flush=True)
            break
    print("stopping…", flush=True)
    await stack.stop()


if __name__ == "__main__":
    main()
