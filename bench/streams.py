"""Concurrent SSE streams on one gateway process (1,000 by default; BENCH_STREAMS): memory per
stream, CPU, and the first-token latency added compared with a single stream, in the same run.

The demo model streams slowly (2 tokens/s, ~20 s an answer; BENCH_STREAMS_TOKENS_PER_S) so that
all streams are open at once; the provider worker and the orchestrator take every stream's job
at a time, and the user's stream-slot limit is raised to fit them all (one user). For 5,000
streams: BENCH_STREAMS=5000 BENCH_RAMP_S=200 BENCH_STREAMS_TOKENS_PER_S=0.1 (the system starts
~30 turns/s at best; answers of ~40 tokens then last ~6 minutes, longer than the ramp; ~11
minutes in all).

BENCH_STREAMS_PROFILE=1: the gateway is restarted with tracemalloc on (`tracemalloc_site/`
put on its PYTHONPATH only; nothing in the service), and a snapshot is taken before the streams
are opened and one once they are all open (after the ramp and BENCH_STREAMS_SETTLE_S); the
growth by allocation site and by library, per stream, is written to
`bench/results/streams-memory.json` (`streams_memory.py`) beside a plain run's RSS growth (the
same streams first through the gateway as it is). CPU and latency figures of the profiled run
are tracemalloc's as much as the gateway's; `streams.json` is not written then.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from parley_dev.stack import Stack

from . import streams_memory
from .sse_client import TurnResult, send_turn
from .stats import percentile, summary_ms, write
from .system import system

STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
# Streams are opened over this many seconds (0: all at once, a burst); each lasts ~20 s, so
# with 10 s every stream is open together for a while either way.
RAMP_S = float(os.environ.get("BENCH_RAMP_S", "10"))
SINGLE_RUNS = 20
FIRST_TOKEN_DELAY_MS = 100
TOKENS_PER_S = float(os.environ.get("BENCH_STREAMS_TOKENS_PER_S", "2"))
PROFILE = os.environ.get("BENCH_STREAMS_PROFILE", "") not in ("", "0")
# In profile mode, how long after the last stream was opened the second snapshot is taken.
SETTLE_S = float(os.environ.get("BENCH_STREAMS_SETTLE_S", "5"))
SITE_DIR = Path(__file__).resolve().parent / "tracemalloc_site"


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).startswith("socket:")
    return count


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    key = "pk_bench_" + secrets.token_urlsafe(18)
    jobs = str(min(5000, max(2000, STREAMS + 10)))
    extra_env = {
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": str(FIRST_TOKEN_DELAY_MS),
        "PARLEY_DEMO_TOKENS_PER_S": str(TOKENS_PER_S),
        "PARLEY_WORKER_PREFETCH": jobs,
        "PARLEY_ORCHESTRATOR_PREFETCH": jobs,
        "PARLEY_MAX_STREAMS_PER_USER": str(min(10_000, max(5000, STREAMS + SINGLE_RUNS))),
        # Every running job renews its lease every third of this: at the default 1.5 s, 5,000
        # slow answers would cost the worker 10,000 Redis writes a second (it measures the
        # gateway, not the worker's failover).
        "PARLEY_WORKER_LEASE_S": "30",
    }
    async with system("streams", key, extra_env) as stack:
        result = await _measure(stack, key)
        if PROFILE:
            # The same streams again, through a gateway restarted with tracemalloc on: its RSS
            # is tracemalloc's and the snapshots' as much as the streams', so the RSS per
            # stream to set against the traced growth is the plain run's.
            profiled = await _measure(stack, key, await _profiled_gateway(stack))
            profile = profiled.pop("memory_profile")
            profile["per_stream_kb"] = {
                "rss_kb": result["gateway_memory_per_stream_kb"],
                **profile["per_stream_kb"],
            }
            profile["per_stream_kb"]["untraced_kb"] = round(
                result["gateway_memory_per_stream_kb"] - profile["per_stream_kb"]["traced_kb"], 2
            )
            result = {"plain_run": result, "profiled_run": profiled, "memory_profile": profile}
    path = write("streams-memory" if PROFILE else "streams", result)
    print(f"wrote {path}")


async def _profiled_gateway(stack: Stack) -> Path:
    """The gateway restarted with tracemalloc (see the module); where its snapshots go."""
    directory = Path(tempfile.mkdtemp(prefix="parley-bench-tracemalloc-"))
    stack.stop_service("gateway")
    path = os.pathsep.join(p for p in (str(SITE_DIR), os.environ.get("PYTHONPATH", "")) if p)
    stack.start_service("gateway", PYTHONPATH=path, BENCH_TRACEMALLOC_DIR=str(directory))
    # Importing everything under tracemalloc on a busy machine takes a while.
    await stack.wait_ready(timeout_s=300)
    return directory


async def _measure(stack: Stack, key: str, profile_dir: Path | None = None) -> dict[str, Any]:
    gateway_pid = stack.processes["gateway"].pid
    port = stack.gateway_port
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        conversations = []
        for _ in range(STREAMS + SINGLE_RUNS):
            reply = await client.post("/v1/conversations", json={})
            conversations.append(reply.json()["id"])

    def turn(i: int, first_delta_only: bool = False) -> Any:
        return send_turn(
            "127.0.0.1",
            port,
            f"/v1/conversations/{conversations[i]}/messages",
            key,
            {"content": f"stream {i}"},
            first_delta_only,
        )

    # The baseline: one stream at a time, to its first token; then cancelled, so that the rest
    # of its answer does not hold one of the worker's jobs.
    single: list[TurnResult] = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(SINGLE_RUNS):
            single.append(await turn(STREAMS + i, first_delta_only=True))
            if single[-1].response_id:
                await client.post(f"/v1/responses/{single[-1].response_id}/cancel")
    single_ttft = [r.first_delta_s for r in single if r.first_delta_s is not None]
    await asyncio.sleep(1.0)

    if profile_dir is not None:
        snapshot_before, meta_before = await streams_memory.request_snapshot(gateway_pid, profile_dir, 0)
    rss_before = _rss_kb(gateway_pid)
    sockets_before = _sockets(gateway_pid)
    cpu_before = _cpu_s(gateway_pid)
    wall_start = time.perf_counter()
    tasks = []
    for i in range(STREAMS):
        tasks.append(asyncio.create_task(turn(i)))
        if RAMP_S:
            await asyncio.sleep(RAMP_S / STREAMS)
    # Sample the gateway's memory while every stream is open (after all first tokens).
    peak_rss = rss_before
    open_together = 0
    profile: dict[str, Any] | None = None
    if profile_dir is not None:
        await asyncio.sleep(SETTLE_S)
        # Per stream open, not per request sent (on a loaded machine some may not be open yet,
        # or already closed): the requests not finished and the gateway's new sockets (which
        # also count any connection its Redis pool added) both bound it; the smaller is used.
        # (Its gauge of streams counts only those whose relay began: past their first frame.)
        async with httpx.AsyncClient(base_url=stack.base_url) as client:
            gauge = streams_memory.gauge_value((await client.get("/metrics")).text, "parley_active_streams")
        unfinished = sum(not t.done() for t in tasks)
        new_sockets = _sockets(gateway_pid) - sockets_before
        open_at_snapshot = max(1, min(unfinished, new_sockets))
        snapshot_open, meta_open = await streams_memory.request_snapshot(gateway_pid, profile_dir, 1)
        diffs = streams_memory.site_diffs(snapshot_before, snapshot_open)
        profile = {
            "streams_open_at_snapshot": open_at_snapshot,
            "requests_unfinished_at_snapshot": unfinished,
            "new_gateway_sockets_at_snapshot": new_sockets,
            "relays_running_at_snapshot": gauge,
            "tracemalloc_frames": int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")),
            "per_stream_kb": streams_memory.traced_growth(meta_before, meta_open, open_at_snapshot),
            "snapshot_meta": {"before": meta_before, "open": meta_open},
            "snapshot_dir": str(profile_dir),
            "by_library": streams_memory.per_stream_libraries(diffs, open_at_snapshot),
            "by_site": streams_memory.per_stream_sites(diffs, open_at_snapshot),
        }
        del snapshot_before, snapshot_open, diffs
    # And the RSS at the moment the gateway held the most client connections (its sockets,
    # less those it had before), for the memory per stream actually open (on a loaded machine
    # not every request is open at once).
    most_open = (0, rss_before)
    while not all(t.done() for t in tasks):
        open_together = max(open_together, sum(not t.done() for t in tasks))
        await asyncio.sleep(0.5)
        rss = _rss_kb(gateway_pid)
        peak_rss = max(peak_rss, rss)
        connections = _sockets(gateway_pid) - sockets_before
        if connections > most_open[0]:
            most_open = (connections, rss)
    results = [t.result() for t in tasks]
    wall = time.perf_counter() - wall_start
    cpu = _cpu_s(gateway_pid) - cpu_before

    ok = [r for r in results if r.status == 200 and r.total_s is not None and r.first_delta_s is not None]
    statuses: dict[str, int] = {}
    for r in results:
        label = f"{r.status}:{'done' if r.total_s is not None else 'cut'}:{r.last_event or '-'}"
        statuses[label] = statuses.get(label, 0) + 1
    ttft = [r.first_delta_s for r in ok if r.first_delta_s is not None]
    single_p50 = percentile(single_ttft, 50)
    out = {
        "streams": STREAMS,
        "ramp_s": RAMP_S,
        "completed": len(ok),
        "errors": STREAMS - len(ok),
        "demo_pace": {"first_token_delay_ms": FIRST_TOKEN_DELAY_MS, "tokens_per_s": TOKENS_PER_S},
        "single_stream_ttft_ms": summary_ms(single_ttft),
        "concurrent_ttft_ms": summary_ms(ttft) if ttft else None,
        "added_ttft_ms": {
            "p50": round((percentile(ttft, 50) - single_p50) * 1000, 2),
            "p99": round((percentile(ttft, 99) - single_p50) * 1000, 2),
        }
        if ttft
        else None,
        "gateway_rss_mb": {"before": round(rss_before / 1024, 1), "peak": round(peak_rss / 1024, 1)},
        "gateway_memory_per_stream_kb": round((peak_rss - rss_before) / STREAMS, 1),
        "gateway_most_connections_open": most_open[0],
        "gateway_memory_per_open_stream_kb": round((most_open[1] - rss_before) / most_open[0], 1)
        if most_open[0]
        else None,
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "gateway_cpu_ms_per_stream": round(1000 * cpu / STREAMS, 2),
        "wall_s": round(wall, 1),
        "max_streams_open_together": open_together,
        "sse_events_received": sum(r.events for r in results),
        "outcomes": statuses,
    }
    if profile is not None:
        out["memory_profile"] = profile
    for k, v in out.items():
        print(f"{k}: {v}")
    return out
