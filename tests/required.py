"""What a test needs from the machine, and what happens when it is missing.

A test whose server or browser is missing skips, saying why, unless PARLEY_REQUIRE names it
(comma-separated: `cassandra`, `browser`, `rabbitmq-cluster`, or `all`): then the test fails.
`.ci/run` sets PARLEY_REQUIRE=all, so a green CI means every suite ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get("PARLEY_REQUIRE", "").split(",") if p.strip())


def unavailable(what: str, why: str) -> NoReturn:
    """Skip the test, or fail it when PARLEY_REQUIRE names `what`."""
    wanted = required()
    if what in wanted or "all" in wanted:
        pytest.fail(f"{what} is required (PARLEY_REQUIRE={','.join(sorted(wanted))}) but unavailable: {why}")
    pytest.skip(why)
