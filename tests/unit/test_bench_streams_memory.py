"""The streams benchmark's memory profile: allocation sites grouped by library, growth per
stream between two tracemalloc snapshots, and the sitecustomize that takes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from bench import streams_memory
from bench.streams_memory import SiteDiff, library_of, per_stream_libraries, per_stream_sites, short_path

SITE = "/work/x/.venv/lib/python3.11/site-packages"


@pytest.mark.parametrize(
    ("filename", "library"),
    [
        (f"{SITE}/uvicorn/protocols/http/httptools_impl.py", "uvicorn/httptools"),
        (f"{SITE}/starlette/responses.py", "starlette/fastapi"),
        (f"{SITE}/fastapi/routing.py", "starlette/fastapi"),
        (f"{SITE}/aiormq/connection.py", "aio-pika"),
        (f"{SITE}/opentelemetry/sdk/trace/__init__.py", "telemetry"),
        ("/work/x/services/gateway/parley_gateway/compression.py", "compression (zlib)"),
        ("/work/x/services/gateway/parley_gateway/sse_response.py", "parley_gateway"),
        ("/work/x/libs/common/parley_common/budgets/stream_slots.py", "parley_common"),
        ("/usr/lib/python3.11/asyncio/queues.py", "asyncio"),
        ("/usr/lib/python3.11/contextlib.py", "python (other stdlib)"),
        (f"{SITE}/somelib/core.py", "somelib"),
        (f"{SITE}/single_module.py", "single_module"),
        ("<unknown>", "no Python frame (C)"),
    ],
)
def test_library_of(filename: str, library: str) -> None:
    assert library_of(filename) == library


def test_short_path() -> None:
    assert short_path(f"{SITE}/uvicorn/server.py") == "uvicorn/server.py"
    assert short_path("/usr/lib/python3.11/asyncio/locks.py") == "asyncio/locks.py"
    assert short_path("/w/services/gateway/parley_gateway/sse.py") == "parley_gateway/sse.py"


DIFFS = [
    SiteDiff(f"{SITE}/starlette/routing.py", 10, 40_000, 400),
    SiteDiff(f"{SITE}/starlette/responses.py", 64, 10_000, 100),
    SiteDiff("/usr/lib/python3.11/asyncio/queues.py", 37, 30_000, 200),
    SiteDiff("/usr/lib/python3.11/asyncio/events.py", 5, -6_000, -50),
    SiteDiff("/w/services/gateway/parley_gateway/turns.py", 1, 0, 0),
]


def test_sites_per_stream_largest_first_and_only_growth() -> None:
    rows = per_stream_sites(DIFFS, streams=100, top=2)
    assert rows == [
        {
            "site": "starlette/routing.py:10",
            "library": "starlette/fastapi",
            "bytes_per_stream": 400.0,
            "objects_per_stream": 4.0,
        },
        {"site": "asyncio/queues.py:37", "library": "asyncio", "bytes_per_stream": 300.0, "objects_per_stream": 2.0},
    ]
    assert len(per_stream_sites(DIFFS, streams=100)) == 3  # what shrank or stayed is left out


def test_libraries_net_of_what_shrank() -> None:
    rows = per_stream_libraries(DIFFS, streams=100)
    assert [r["library"] for r in rows] == ["starlette/fastapi", "asyncio", "parley_gateway"]
    assert rows[0]["bytes_per_stream"] == 500.0
    assert rows[1] == {"library": "asyncio", "bytes_per_stream": 240.0, "objects_per_stream": 1.5}


def test_traced_growth_per_stream() -> None:
    before = {"rss_kb": 1, "traced_bytes": 1_000_000, "traced_peak_bytes": 0, "tracemalloc_bytes": 100_000}
    after = {
        "rss_kb": 2,
        "traced_bytes": 1_000_000 + 200 * 1024 * 10,
        "traced_peak_bytes": 0,
        "tracemalloc_bytes": 100_000 + 200 * 1024,
    }
    assert streams_memory.traced_growth(before, after, 10) == {"traced_kb": 200.0, "tracemalloc_own_kb": 20.0}


def test_site_diffs_of_real_snapshots_leave_the_profiler_out() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [bytearray(10_000) for _ in range(100)]  # one site, ~1 MB
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    diffs = streams_memory.site_diffs(before, after)
    mine = [d for d in diffs if d.filename == __file__]
    assert sum(d.size_diff for d in mine) >= 100 * 10_000
    assert max(mine, key=lambda d: d.size_diff).count_diff >= 100
    assert not any(d.filename.endswith("tracemalloc.py") for d in diffs)
    del kept


def test_sitecustomize_dumps_a_snapshot_on_sigusr2(tmp_path: Path) -> None:
    site_dir = Path(streams_memory.__file__).parent / "tracemalloc_site"
    env = dict(os.environ, PYTHONPATH=str(site_dir), BENCH_TRACEMALLOC_DIR=str(tmp_path))
    code = "import sys, tracemalloc; print(tracemalloc.is_tracing(), flush=True); sys.stdin.read()"
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "True"
        process.send_signal(signal.SIGUSR2)
        meta_path = tmp_path / "snapshot-0.json"
        for _ in range(600):
            if meta_path.exists():
                break
            try:
                process.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        meta = json.loads(meta_path.read_text())
        assert meta["rss_kb"] > 0 and meta["traced_bytes"] > 0
        snapshot = tracemalloc.Snapshot.load(str(tmp_path / "snapshot-0.pickle"))
        assert snapshot.traces
    finally:
        process.communicate("")
    assert process.returncode == 0


def test_gauge_value() -> None:
    text = (
        "# HELP parley_active_streams SSE streams open on this gateway.\n"
        "# TYPE parley_active_streams gauge\n"
        "parley_active_streams_total 3.0\n"
        "parley_active_streams 412.0\n"
    )
    assert streams_memory.gauge_value(text, "parley_active_streams") == 412.0
    assert streams_memory.gauge_value(text, "parley_missing") is None
