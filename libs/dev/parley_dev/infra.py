"""The servers Parley needs (RabbitMQ, Redis): found, started, or explained.

Two ways to get them, for the same tests: containers through testcontainers when a Docker
engine is reachable, otherwise the servers installed on this machine (started if they are
installed but down).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class Infra:
    amqp_url: str
    redis_url: str
    source: str  # "containers" or "local"


class InfraUnavailable(RuntimeError):
    pass


def reachable(url: str, timeout_s: float = 0.5) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or {"amqp": 5672, "redis": 6379}.get(parsed.scheme, 0)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def docker_available(socket_path: str = "/var/run/docker.sock") -> bool:
    """True when a Docker engine answers on its local socket (the docker client alone is not enough)."""
    if not os.path.exists(socket_path):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(socket_path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b"200 OK" in sock.recv(1024)
    except OSError:
        return False


_LOCAL_STOP = {
    "amqp": ["rabbitmqctl", "stop"],
    "redis": ["redis-cli", "-p", "6379", "shutdown", "nosave"],
}
_LOCAL_START = {
    "amqp": (
        "rabbitmq-server",
        ["rabbitmq-server", "-detached"],
        "apt-get install -y rabbitmq-server",
    ),
    "redis": (
        "redis-server",
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        "apt-get install -y redis-server",
    ),
}


def ensure_local(url: str, wait_s: float = 60.0) -> bool:
    """Make the server at `url` reachable, starting the locally installed one if needed.

    Returns True when it had to start the server (so the caller can stop it again)."""
    if reachable(url):
        return False
    scheme = urlparse(url).scheme
    binary, command, install = _LOCAL_START[scheme]
    if shutil.which(binary) is None:
        raise InfraUnavailable(f"{url.split('@')[-1]} is not reachable and {binary} is not installed: run `{install}`")
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if reachable(url):
            if scheme == "amqp":
                time.sleep(1.0)  # the port opens a moment before the broker accepts logins
            return True
        time.sleep(0.25)
    raise InfraUnavailable(f"started {binary} but {url.split('@')[-1]} did not become reachable in {wait_s:.0f}s")


def stop_local(url: str) -> None:
    scheme = urlparse(url).scheme
    command = _LOCAL_STOP[scheme]
    if shutil.which(command[0]):
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


@contextlib.contextmanager
def provide(
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/",
    redis_url: str = "redis://127.0.0.1:6379/0",
    prefer_containers: bool = True,
) -> Iterator[Infra]:
    """RabbitMQ and Redis for a test session or a dev run.

    Containers are removed afterwards, and local servers this call started are stopped."""
    if prefer_containers and docker_available():
        with _containers() as infra:
            yield infra
        return
    started = [url for url in (amqp_url, redis_url) if ensure_local(url)]
    try:
        yield Infra(amqp_url=amqp_url, redis_url=redis_url, source="local")
    finally:
        for url in started:
            stop_local(url)


@contextlib.contextmanager
def _containers() -> Iterator[Infra]:
    # testcontainers warns about its own deprecated internals; those warnings are not ours.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from testcontainers.community.rabbitmq import RabbitMqContainer
        from testcontainers.community.redis import RedisContainer

        rabbit = RabbitMqContainer("rabbitmq:3.13-alpine").start()
        redis = RedisContainer("redis:7-alpine").start()
        infra = Infra(
            amqp_url=f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/",
            redis_url=f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            source="containers",
        )
    try:
        yield infra
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            redis.stop()
            rabbit.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
