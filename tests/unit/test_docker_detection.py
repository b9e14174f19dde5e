"""Finding a Docker engine the way testcontainers does: DOCKER_HOST (unix or tcp), else the
usual sockets; a socket file or a port with no engine behind it does not count."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley_dev.infra import docker_available, docker_endpoints


def _answer_pings(server: socket.socket, reply: bytes) -> None:
    while True:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.recv(1024)
            conn.sendall(reply)


@pytest.fixture
def engine_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    threading.Thread(target=_answer_pings, args=(server, b"HTTP/1.0 200 OK\r\n\r\nOK"), daemon=True).start()
    yield path
    server.close()


@pytest.fixture
def silent_tcp() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_answer_pings, args=(server, b"HTTP/1.0 404 Not Found\r\n\r\n"), daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_docker_host_is_where_the_engine_is_looked_for(monkeypatch: pytest.MonkeyPatch, engine_socket: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{engine_socket}")
    assert docker_endpoints() == [f"unix://{engine_socket}"]
    assert docker_available()


def test_a_socket_file_or_port_without_an_engine_is_not_docker(tmp_path: Path, silent_tcp: int) -> None:
    stale = tmp_path / "stale.sock"
    stale.touch()
    assert not docker_available([f"unix://{stale}", f"unix://{tmp_path / 'missing.sock'}"])
    assert not docker_available([f"tcp://127.0.0.1:{silent_tcp}"])


def test_without_docker_host_the_system_and_rootless_sockets_are_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert docker_endpoints() == ["unix:///var/run/docker.sock", "unix:///run/user/1000/docker.sock"]
