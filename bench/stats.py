"""Percentiles and the JSON result files benchmarks write."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

# BENCH_RESULTS_DIR: elsewhere, so that a trial run does not overwrite the results kept here.
RESULTS = Path(os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).parent / "results")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(p / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {f"p{p}": round(percentile(ms, p), 2) for p in (50, 95, 99)}


def write(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
