"""The whole system for a benchmark: servers, the five services, logs kept on failure."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from parley_dev.infra import provide
from parley_dev.stack import Stack, running
from tests.support.stacks import stack_config


@contextlib.asynccontextmanager
async def system(name: str, key: str, extra_env: dict[str, str]) -> AsyncIterator[Stack]:
    """Start everything in a namespace of its own; say where the logs are if it fails."""
    workdir = Path(tempfile.mkdtemp(prefix=f"parley-bench-{name}-"))
    with provide() as infra:
        # Benchmarks measure the pipeline, not the per-user limits.
        limits = {"PARLEY_MAX_STREAMS_PER_USER": "5000", "PARLEY_REQUESTS_PER_MINUTE": "1000000"}
        config = stack_config(infra, workdir, "bench", key, {"PARLEY_LOG_LEVEL": "WARNING", **limits, **extra_env})
        try:
            async with running(config) as stack:
                yield stack
        except Exception:
            print(f"benchmark {name} failed; service logs are in {workdir / 'log'}")
            raise
