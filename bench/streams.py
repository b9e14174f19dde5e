"""1,000 concurrent SSE streams on one gateway process: memory per stream, CPU, and the
first-token latency added compared with a single stream, measured in the same run.

The demo model streams slowly (2 tokens/s, ~20 s an answer) so that all streams are open at
once; the provider worker takes up to 2,000 jobs at a time.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from parley_dev.stack import Stack

from .sse_client import TurnResult, send_turn
from .stats import percentile, summary_ms, write
from .system import system

STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
# Streams are opened over this many seconds (0: all at once, a burst); each lasts ~20 s, so
# with 10 s every stream is open together for a while either way.
RAMP_S = float(os.environ.get("BENCH_RAMP_S", "10"))
SINGLE_RUNS = 20
FIRST_TOKEN_DELAY_MS = 100
TOKENS_PER_S = 2.0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main() -> None:
    key = "pk_bench_" + secrets.token_urlsafe(18)
    extra_env = {
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": str(FIRST_TOKEN_DELAY_MS),
        "PARLEY_DEMO_TOKENS_PER_S": str(TOKENS_PER_S),
        "PARLEY_WORKER_PREFETCH": "2000",
        "PARLEY_ORCHESTRATOR_PREFETCH": "2000",
    }
    async with system("streams", key, extra_env) as stack:
        result = await _measure(stack, key)
    path = write("streams", result)
    print(f"wrote {path}")


async def _measure(stack: Stack, key: str) -> dict[str, Any]:
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

    # The baseline: one stream at a time, to its first token (the rest generates on, unread).
    single: list[TurnResult] = []
    for i in range(SINGLE_RUNS):
        single.append(await turn(STREAMS + i, first_delta_only=True))
    single_ttft = [r.first_delta_s for r in single if r.first_delta_s is not None]

    rss_before = _rss_kb(gateway_pid)
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
    while not all(t.done() for t in tasks):
        open_together = max(open_together, sum(not t.done() for t in tasks))
        await asyncio.sleep(0.5)
        peak_rss = max(peak_rss, _rss_kb(gateway_pid))
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
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "gateway_cpu_ms_per_stream": round(1000 * cpu / STREAMS, 2),
        "wall_s": round(wall, 1),
        "max_streams_open_together": open_together,
        "sse_events_received": sum(r.events for r in results),
        "outcomes": statuses,
    }
    for k, v in out.items():
        print(f"{k}: {v}")
    return out
