"""The container engine: Docker where one answers, else Debian's podman as configured here; and
the host's package-index configuration, which every build needs (this machine reaches PyPI and
Debian's packages only through it)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from parley_dev.infra import docker_available

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".cache" / "containers"
# podman's Docker-compatible API for testcontainers: a socket of Parley's own, never the
# default Docker paths (other test runs on this machine would start using it).
SOCKET = Path(os.environ.get("PARLEY_PODMAN_SOCKET", "/run/parley-podman/podman.sock"))
# Where a build's RUN step finds the host's CA bundle (the build secret `ca-certificates`).
CA_IN_BUILD = "/run/secrets/ca-certificates"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


class EngineError(RuntimeError):
    pass


def containers_conf() -> Path:
    """podman's settings for Parley, written for this machine (CONTAINERS_CONF points at it).

    runc, because crun cannot set RLIMIT_NPROC in this sandbox. The default ulimits are the
    ones this process may set: podman's own defaults (1048576 files, processes up to pid_max)
    exceed the hard limits here, and without CAP_SYS_RESOURCE raising one fails."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    limits = [f"nofile={nofile}:{nofile}"] if nofile != resource.RLIM_INFINITY else []
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    limits.append(f"nproc={nproc}:{nproc}")
    text = (
        "# Written by tools/containers (engine.containers_conf); do not edit.\n"
        "[containers]\n"
        f"default_ulimits = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in limits)}]\n"
        "[engine]\n"
        'runtime = "runc"\n'
        "[network]\n"
        'network_backend = "netavark"\n'
    )
    path = STATE / "containers.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman_binary() -> str:
    found = shutil.which("podman")
    if found is None:
        raise EngineError("podman is not installed: run `tools/system-deps.sh containers` (as root)")
    return found


def podman(*args: str, check: bool = True, capture: bool = False, timeout: float | None = None) -> str:
    """Run podman with Parley's containers.conf; its stdout when `capture`."""
    done = subprocess.run(
        [podman_binary(), *args],
        env=podman_env(),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        detail = (done.stderr or "").strip()[-2000:] if capture else ""
        raise EngineError(f"podman {' '.join(args[:3])} … exited with {done.returncode}\n{detail}".rstrip())
    return done.stdout or ""


def image_exists(name: str) -> bool:
    return subprocess.run([podman_binary(), "image", "exists", name], env=podman_env(), check=False).returncode == 0


def engine() -> str:
    """`docker` when a Docker engine answers, else `podman`."""
    return "docker" if docker_available() else "podman"


# --- the host's package-index configuration, handed to builds as build secrets ------------


def pip_conf() -> str:
    """pip's effective configuration here (files and PIP_* variables) as one pip.conf for a
    build: `cert` points at the host's CA bundle mounted at CA_IN_BUILD, and local folders
    (find-links to a directory of this machine) are left out."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    settings: dict[str, str] = {}
    # `global.index-url='…'` from files, `:env:.index-url='…'` from PIP_* variables (which win).
    entries = sorted(
        (line.split("=", 1) for line in listed.splitlines() if "=" in line), key=lambda e: e[0].startswith(":env:")
    )
    for name, quoted in entries:
        key, value = name.rsplit(".", 1)[-1], quoted.strip().strip("'")
        if key == "find-links" and not re.match(r"^https?://", value):
            continue
        if key == "cert":
            value = CA_IN_BUILD
        settings[key] = value
    settings.setdefault("cert", CA_IN_BUILD)
    return "[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items()))


def host_ca_bundle() -> Path:
    """The CA bundle this machine's pip and apt trust (it may hold an egress proxy's CA)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("REQUESTS_CA_BUNDLE"), SYSTEM_CA):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise EngineError(f"no CA bundle at {SYSTEM_CA}: install ca-certificates")


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current = {}
            continue
        if line.lstrip().startswith("#"):
            continue
        if ":" in line and not line[0].isspace():
            key, value = line.split(":", 1)
            current[key.strip().lower()] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def apt_sources(root: Path = Path("/etc/apt")) -> str:
    """The host's enabled Debian sources in one-line format (sources.list), keyed by Debian's
    own archive keyring: what a build's apt-get uses instead of the image's sources."""
    lines: list[str] = []
    files = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for path in files:
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip().startswith("deb ") and "debian" in line:
                    lines.append(line.strip())
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for stanza in _deb822_stanzas(path.read_text()):
            if stanza.get("enabled", "yes").lower() == "no" or "deb" not in stanza.get("types", "").split():
                continue
            signed = stanza.get("signed-by", "")
            if signed and "debian-archive-keyring" not in signed:
                continue
            for uri in stanza.get("uris", "").split():
                for suite in stanza.get("suites", "").split():
                    lines.append(f"deb {uri} {suite} {stanza.get('components', 'main')}")
    if not lines:
        raise EngineError(f"no Debian apt sources in {root}: a build could not install Debian's packages")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def apt_conf() -> str:
    """The host's settings for reaching the archive (proxies, validity and date checks, retries,
    time-outs) from `apt-config dump`, which apt in a build needs too."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=False).stdout
    wanted = re.compile(
        r'^Acquire::(?:(?:https?|ftp)::(?:Proxy|Timeout)\S*|Check-Valid-Until|Check-Date|Retries) "[^"]+";$'
    )
    return "".join(line + "\n" for line in dump.splitlines() if wanted.match(line.strip()))


def debian_mirror() -> str:
    """The host's Debian mirror (the bookworm suite's URI), for debootstrap."""
    for line in apt_sources().splitlines():
        _, uri, suite, *_ = line.split()
        if suite == "bookworm":
            return uri
    raise EngineError("the host's apt sources have no bookworm suite")


def build_secrets() -> list[tuple[str, Path]]:
    """(id, file) of each build secret: pip.conf, the CA bundle, apt's sources and settings."""
    folder = STATE / "host"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    written = {"pip.conf": pip_conf(), "apt-sources": apt_sources(), "apt-conf": apt_conf()}
    secrets = []
    for name, text in written.items():
        path = folder / name
        path.write_text(text)
        secrets.append((name, path))
    secrets.append(("ca-certificates", host_ca_bundle()))
    return secrets


# --- podman's API for docker-py / testcontainers -----------------------------------------


def api_answers(socket_path: Path = SOCKET) -> bool:
    return bool(docker_available([f"unix://{socket_path}"]))


@contextlib.contextmanager
def api_service(socket_path: Path = SOCKET, wait_s: float = 30.0) -> Iterator[str]:
    """podman's Docker-compatible API on `socket_path` while the block runs; its DOCKER_HOST.

    A service already answering there (another run's) is used as it is and left running."""
    url = f"unix://{socket_path}"
    if api_answers(socket_path):
        yield url
        return
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    log = open(STATE / "podman-service.log", "ab")
    service = subprocess.Popen(
        [podman_binary(), "system", "service", "--time=0", url],
        env=podman_env(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + wait_s
        while not api_answers(socket_path):
            if service.poll() is not None or time.monotonic() > deadline:
                raise EngineError(f"podman system service did not answer on {url}; see {log.name}")
            time.sleep(0.1)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
        socket_path.unlink(missing_ok=True)


def run_with_api(command: Sequence[str]) -> int:
    """Run `command` with DOCKER_HOST pointing at podman's API (Ryuk off: its image is on no
    registry here, and each fixture removes its own containers; published ports on 127.0.0.1,
    which `localhost` may not resolve to first, reached as published ports even though this
    machine itself looks like a container to testcontainers)."""
    with api_service() as url:
        env = {
            **os.environ,
            "DOCKER_HOST": url,
            "TESTCONTAINERS_RYUK_DISABLED": "true",
            "TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1",
            "TESTCONTAINERS_CONNECTION_MODE": "docker_host",
        }
        return subprocess.run(list(command), env=env, check=False).returncode
