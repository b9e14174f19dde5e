"""Containers from the images `make images` builds, through the Docker API that DOCKER_HOST names
(`make test-containers` serves podman's). `make test` runs this folder only there: without an
engine its tests skip, or fail under PARLEY_REQUIRE."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parley_dev import images
from parley_dev.infra import docker_available, docker_endpoints
from tests.required import unavailable
from tests.support.containers import ImageNotFound, docker


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    if not docker_available():
        unavailable("containers", f"no Docker engine answers at {docker_endpoints()}: run `make test-containers`")
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def app_image(engine: docker.DockerClient) -> str:
    """Parley's image, as `make image` tags it."""
    name = f"{images.APP}:latest"
    try:
        engine.images.get(name)
    except ImageNotFound:
        unavailable("containers", f"{name} is not built: run `make image`")
    return name
