"""Stacks of the five services as real processes, each on a namespace of its own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from parley_dev.infra import Infra
from parley_dev.stack import Stack, StackConfig, running

from .models import write_models


def stack_config(
    infra: Infra,
    workdir: Path,
    prefix: str,
    key: str,
    env: dict[str, str] | None = None,
    registry: dict[str, Any] | None = None,
) -> StackConfig:
    """A stack on the namespace `prefix` and a random suffix, with `key` as the dev user's API
    key, the settings `env` and, given one, the model `registry` (PARLEY_MODELS_FILE)."""
    extra_env = dict(env or {})
    if registry is not None:
        extra_env["PARLEY_MODELS_FILE"] = str(write_models(workdir, registry))
    return StackConfig(
        infra=infra,
        namespace=prefix + uuid.uuid4().hex[:10],
        workdir=workdir,
        dev_api_key=key,
        extra_env=extra_env,
        keeps_s3_data=False,
    )


@contextlib.asynccontextmanager
async def own_stack(config: StackConfig, timeout_s: float = 60.0, clean_exit: bool = True) -> AsyncIterator[Stack]:
    """The stack running, ready; stopped afterwards, where (with `clean_exit`) every service
    must have stopped cleanly on SIGTERM."""
    async with running(config, timeout_s) as stack:
        yield stack
    if clean_exit:
        assert all(code == 0 for code in stack.exit_codes.values()), f"unclean exits: {stack.exit_codes}"
