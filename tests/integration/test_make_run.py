"""`make run` (python -m parley_dev.run) as a user runs it: it comes up with any provider set,
a service that dies is started again, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from parley_dev.infra import Infra, free_port
from tests.support.sse import frames

KEY = "pk_run_" + uuid.uuid4().hex


@dataclass
class MakeRun:
    process: subprocess.Popen[str]
    port: int
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    pump: threading.Thread | None = None
    seen: list[str] = field(default_factory=list)

    def wait_for(self, text: str, timeout_s: float = 120.0) -> str:
        """The first output line (from now on, or already seen) containing `text`."""
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"make run never printed {text!r}; its output:\n" + "".join(self.seen))

    def service_pid(self, module: str) -> int:
        """The pid of make run's child process running `python -m <module>` (read from /proc)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if parent == self.process.pid and argv[-3:-1] == [b"-m", module.encode()]:
                    return int(entry.name)
        raise AssertionError(f"no {module} process under make run")


def _start(infra: Infra, workdir: Path, **env: str) -> MakeRun:
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    environment.update(
        PARLEY_PORT=str(port),
        PARLEY_DEV_API_KEY=KEY,
        PARLEY_NAMESPACE="run" + uuid.uuid4().hex[:8],
        PARLEY_AMQP_URL=infra.amqp_url,
        PARLEY_REDIS_URL=infra.redis_url,
        PARLEY_DEMO_TOKENS_PER_S="200",
        PYTHONUNBUFFERED="1",
        **env,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "parley_dev.run"],
        cwd=workdir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = MakeRun(process, port)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            run.lines.put(line)

    run.pump = threading.Thread(target=pump, daemon=True)
    run.pump.start()
    return run


@pytest.fixture
def make_run(infra: Infra, tmp_path: Path) -> Iterator[list[MakeRun]]:
    started: list[MakeRun] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.send_signal(signal.SIGINT)
            try:
                run.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                run.process.kill()
                run.process.wait()
        if run.pump is not None:
            run.pump.join(timeout=10)
        if run.process.stdout is not None:
            run.process.stdout.close()


async def _turn(port: int) -> str:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        created = await client.post("/v1/conversations", json={"title": "run"})
        created.raise_for_status()
        url = f"/v1/conversations/{created.json()['id']}/messages"
        text = []
        async with client.stream("POST", url, json={"content": "Hello after a restart"}) as response:
            assert response.status_code == 200, await response.aread()
            async for frame in frames(response):
                assert frame.event != "error", frame.data
                if frame.event == "delta":
                    text.append(frame.data["text"])
        return "".join(text)


async def test_a_service_that_dies_is_restarted_and_serves_again(
    make_run: list[MakeRun], infra: Infra, tmp_path: Path
) -> None:
    run = _start(infra, tmp_path)
    make_run.append(run)
    run.wait_for("Parley is running")
    os.kill(run.service_pid("parley_orchestrator"), signal.SIGKILL)
    exited = run.wait_for("orchestrator exited")
    assert "status -9" in exited and "restarting it in" in exited
    run.wait_for("orchestrator restarted")
    assert await _turn(run.port), "no answer after the orchestrator came back"
    # Ctrl-C stops every service and exits cleanly.
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=90) == 0
    assert not [line for line in run.seen if "restarting" in line and "orchestrator" not in line]


async def test_it_starts_with_a_provider_set_without_the_demo_provider(
    make_run: list[MakeRun], infra: Infra, tmp_path: Path
) -> None:
    # The example registry of real providers; no request reaches OpenAI in this test.
    run = _start(
        infra,
        tmp_path,
        PARLEY_MODELS_FILE=str(Path(__file__).parents[2] / "config" / "models.example.yaml"),
        PARLEY_WORKER_PROVIDERS='["openai"]',
        PARLEY_PROVIDER_API_KEYS='{"openai": "sk-never-used"}',
    )
    make_run.append(run)
    run.wait_for("Parley is running")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"http://127.0.0.1:{run.port}/readyz")).status_code == 200
