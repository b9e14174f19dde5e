"""Where a stream's memory goes in the gateway: two tracemalloc snapshots of the gateway
process (one before the streams are opened, one with them open; taken by
`tracemalloc_site/sitecustomize.py` on SIGUSR2), turned into bytes per stream by allocation
site (file:line) and by library, beside the RSS growth over the same interval.

tracemalloc sees what the Python allocators hand out, attributed to the innermost Python line
running at the time (an object a C extension makes in a callback counts at the Python line
that called in; one made with no Python frame at all counts as `<unknown>`). RSS growth minus
traced growth (and minus tracemalloc's own bookkeeping) is what it cannot see: memory that C
code gets from malloc directly (zlib's compressor state, OpenSSL, the kernel-side socket
buffers are not in RSS at all), and the allocators' fragmentation and free lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A library's files, by a piece of their path; the first match wins (more specific first).
LIBRARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("compression (zlib)", ("/parley_gateway/compression.py", "/zlib", "/gzip.py")),
    ("parley_gateway", ("/parley_gateway/",)),
    ("parley_common", ("/parley_common/",)),
    ("uvicorn/httptools", ("/uvicorn/", "/httptools/")),
    ("uvloop", ("/uvloop/",)),
    ("starlette/fastapi", ("/starlette/", "/fastapi/")),
    ("aio-pika", ("/aio_pika/", "/aiormq/", "/pamqp/")),
    ("redis", ("/redis/",)),
    ("protobuf", ("/google/protobuf/", "_pb2.py")),
    ("telemetry", ("/opentelemetry/", "/prometheus_client/")),
    ("pydantic", ("/pydantic/", "/pydantic_core/")),
    ("asyncio", ("/asyncio/",)),
)
# Allocations of the profiler itself.
_IGNORED = ("/tracemalloc.py", "/tracemalloc_site/sitecustomize.py", "<frozen importlib._bootstrap")
UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class SiteDiff:
    """One allocation site's growth between two snapshots."""

    filename: str
    lineno: int
    size_diff: int
    count_diff: int


def library_of(filename: str) -> str:
    if filename == UNKNOWN:
        return "no Python frame (C)"
    path = filename.replace("\\", "/")
    for name, pieces in LIBRARIES:
        if any(piece in path for piece in pieces):
            return name
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    return "python (other stdlib)"


def short_path(filename: str) -> str:
    """The path from the package on: `uvicorn/protocols/http/httptools_impl.py`."""
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/lib/python3.11/", "/services/gateway/", "/libs/common/", "/libs/contracts/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def site_diffs(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[SiteDiff]:
    """Growth per file:line (innermost frame) from `before` to `after`, the profiler left out."""
    out = []
    for stat in after.compare_to(before, "lineno"):
        frame = stat.traceback[0]
        if any(piece in frame.filename for piece in _IGNORED):
            continue
        out.append(SiteDiff(frame.filename, frame.lineno, stat.size_diff, stat.count_diff))
    return out


def per_stream_sites(diffs: Iterable[SiteDiff], streams: int, top: int = 30) -> list[dict[str, Any]]:
    """The `top` sites that grew most, in bytes (and objects) per stream."""
    ordered = sorted((d for d in diffs if d.size_diff > 0), key=lambda d: d.size_diff, reverse=True)
    return [
        {
            "site": f"{short_path(d.filename)}:{d.lineno}",
            "library": library_of(d.filename),
            "bytes_per_stream": round(d.size_diff / streams, 1),
            "objects_per_stream": round(d.count_diff / streams, 2),
        }
        for d in ordered[:top]
    ]


def per_stream_libraries(diffs: Iterable[SiteDiff], streams: int) -> list[dict[str, Any]]:
    """Every library's net growth (sites that shrank count against it), largest first."""
    totals: dict[str, list[int]] = {}
    for d in diffs:
        entry = totals.setdefault(library_of(d.filename), [0, 0])
        entry[0] += d.size_diff
        entry[1] += d.count_diff
    return [
        {"library": name, "bytes_per_stream": round(size / streams, 1), "objects_per_stream": round(count / streams, 2)}
        for name, (size, count) in sorted(totals.items(), key=lambda item: item[1][0], reverse=True)
    ]


def traced_growth(before: dict[str, int], after: dict[str, int], streams: int) -> dict[str, float]:
    """Per stream, in KB: what the Python allocators handed out more (the traced growth), and
    tracemalloc's own bookkeeping of it. (The RSS of a process under tracemalloc is not the
    figure to set against it: the profiler and its snapshots take memory of their own.)"""
    traced = after["traced_bytes"] - before["traced_bytes"]
    overhead = after["tracemalloc_bytes"] - before["tracemalloc_bytes"]
    return {"traced_kb": round(traced / streams / 1024, 2), "tracemalloc_own_kb": round(overhead / streams / 1024, 2)}


def gauge_value(metrics_text: str, name: str) -> float | None:
    """The value of an unlabelled gauge in a Prometheus text exposition, or None if absent."""
    for line in metrics_text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] == " ":
            return float(line.split()[1])
    return None


async def request_snapshot(
    pid: int, directory: Path, n: int, timeout_s: float = 300.0
) -> tuple[tracemalloc.Snapshot, dict[str, int]]:
    """Signal the process for its snapshot number `n`; wait for it and load it."""
    os.kill(pid, signal.SIGUSR2)
    meta_path = directory / f"snapshot-{n}.json"
    deadline = time.monotonic() + timeout_s
    while not meta_path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no tracemalloc snapshot from pid {pid} after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)
    meta = json.loads(meta_path.read_text())
    snapshot = await asyncio.to_thread(tracemalloc.Snapshot.load, str(directory / f"snapshot-{n}.pickle"))
    return snapshot, meta
