"""Parley's image as an operator meets it: each service starts from it, refuses a wrong setting
with one line naming the variable, runs as the unprivileged user, and counts tokens offline."""

from __future__ import annotations

import pytest

from tests.support.containers import docker


def run_to_exit(
    engine: docker.DockerClient, image: str, command: list[str], environment: dict[str, str], timeout_s: int = 120
) -> tuple[int, str]:
    """Run a container with no network to its end: its exit code and its output."""
    # As Kubernetes runs it (deploy/k8s): a read-only root filesystem with a writable /tmp.
    container = engine.containers.run(
        image, command, environment=environment, detach=True, network_mode="none", read_only=True,
        tmpfs={"/tmp": "size=64m"},
    )  # fmt: skip
    try:
        code = int(container.wait(timeout=timeout_s)["StatusCode"])
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


@pytest.mark.parametrize(
    ("module", "variable", "value", "complaint"),
    [
        ("parley_gateway", "PARLEY_PORT", "eighty", "Input should be a valid integer"),
        ("parley_orchestrator", "PARLEY_CONNECT_TIMEOUT_S", "-5", "Input should be greater than 0"),
        ("parley_worker", "PARLEY_WORKER_PREFETCH", "0", "Input should be greater than or equal to 1"),
        ("parley_history", "PARLEY_HISTORY_STORE", "mongodb", "Input should be 'sqlite' or 'cassandra'"),
        ("parley_media", "PARLEY_MEDIA_GRPC_PORT", "x", "Input should be a valid integer"),
    ],
)
def test_a_wrong_setting_stops_the_service_with_one_line_naming_the_variable(
    engine: docker.DockerClient, app_image: str, module: str, variable: str, value: str, complaint: str
) -> None:
    code, output = run_to_exit(engine, app_image, ["python", "-m", module], {variable: value})
    assert code == 2, output
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    naming = [line for line in lines if line.startswith(f"{variable}:")]
    assert len(naming) == 1 and complaint in naming[0], output
    assert "Traceback" not in output, output
    print(f"{module} with {variable}={value!r}: exit {code}: {naming[0]}")


def test_the_services_run_as_uid_10001_and_count_tokens_with_no_network_on_a_read_only_root(
    engine: docker.DockerClient, app_image: str
) -> None:
    script = (
        "import os; from parley_common.context.tokens import counter_for; "
        "counter = counter_for('openai', 'cl100k_base'); "
        "print(os.getuid(), os.getgid(), counter.text('Hello, Parley! How are you today?'))"
    )
    code, output = run_to_exit(engine, app_image, ["python", "-c", script], {})
    assert code == 0, output
    uid, gid, tokens = output.split()
    assert (uid, gid) == ("10001", "10001")
    assert int(tokens) == 10, output  # cl100k_base, from the wheel inside the image
