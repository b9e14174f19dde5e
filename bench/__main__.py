"""Runs every benchmark and writes bench/results/*.json."""

from __future__ import annotations

import asyncio
import sys

from . import budget_queue, bus, floor, history, media, orchestrator, peer, profile, providers, streams, ttft

BENCHMARKS = {
    "ttft": ttft.main,
    "streams": streams.main,
    "providers": providers.main,
    "history": history.main,
    "orchestrator": orchestrator.main,
    "media": media.main,
    "bus": bus.main,
    "queue": budget_queue.main,
    "peer": peer.main,
    "profile": profile.main,
    # Last: beside its own measurement it names peer's CPU per turn from the same run (peer.json).
    "floor": floor.main,
}


def main() -> None:
    """`python -m bench` runs them all; `python -m bench NAME…` only those."""
    names = sys.argv[1:] or list(BENCHMARKS)
    for name in names:
        print(f"== {name}", flush=True)
        asyncio.run(BENCHMARKS[name]())


main()
