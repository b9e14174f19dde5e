"""`python -m parley_history migrate` (history's initContainer) waits for a store that does not
answer yet, up to PARLEY_CONNECT_TIMEOUT_S, instead of failing at the first refusal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from parley_dev.infra import free_port


def test_migrate_asks_an_unreachable_cassandra_again_until_the_connect_timeout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(
        PARLEY_HISTORY_STORE="cassandra",
        PARLEY_CASSANDRA_CONTACT_POINTS="127.0.0.1",
        PARLEY_CASSANDRA_PORT=str(free_port()),  # nothing listens there
        PARLEY_CASSANDRA_REPLICATION_FACTOR="1",
        PARLEY_CONNECT_TIMEOUT_S="6",
    )
    done = subprocess.run(
        [sys.executable, "-m", "parley_history", "migrate"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    retries = [line for line in lines if line.get("msg") == "store not reachable; trying again"]
    failed = [line for line in lines if line.get("msg") == "migration failed"]
    assert len(retries) >= 2, done.stderr
    assert failed and failed[-1]["attempts"] == len(retries) + 1, failed
