"""Where each Parley service's CPU goes, per turn and per 1,000 streamed tokens, under load from
the fake OpenAI-format upstream, on the native endpoint (BENCH_PROFILE_ENDPOINT=openai:
/v1/chat/completions).

1. CPU per turn: a batch of BENCH_PROFILE_TURNS short turns (300; 10-token answers, as fast as
   the upstream can) on 50 lanes, and one of BENCH_PROFILE_LONG_TURNS long turns (40; 300-token
   answers at BENCH_PROFILE_TOKENS_PER_S, 100 tokens/s) on 20 lanes, no profiler. Each
   service's CPU (and RabbitMQ's and Redis's, net of their idle background) from
   /proc/<pid>/stat, from before the batch's first turn until a second after its last, over
   the batch's turns: no turn is half counted. Per 1,000 tokens is the long turn's extra CPU
   over the short one's, per extra token (the cost a token adds).
2. The top costs: the same two loads for BENCH_PROFILE_S (10 s) each, with
   `py-spy record --format raw --nonblocking` (100 Hz) on every service at once, summarised by
   library, by function, and by the innermost Parley frame below the event loop, as shares of
   the samples (the CPU figures are from 1, without the profiler's interference).
   BENCH_PROFILE_NATIVE=1 adds the frames of compiled code (`--native`: grpc's Cython core,
   uvloop, hiredis...), which py-spy can read only while it pauses the process at each sample
   (so not `--nonblocking`): the shares then show what the compiled code does where the
   default profile sees only the Python frame that called it (`Runner.run` for uvloop).

Writes bench/results/profile.json; the raw py-spy files stay in the run's folder (printed).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from parley_dev.fake_providers import fake_provider_process
from parley_dev.stack import Stack

from . import pyspy
from .cpu import CpuMeter, pid_listening_on
from .peer import Target, _models_file, _one, parley_env, parley_targets
from .stats import write
from .system import system

WINDOW_S = float(os.environ.get("BENCH_PROFILE_S", "10"))
ENDPOINT = os.environ.get("BENCH_PROFILE_ENDPOINT", "native")
SHORT_TOKENS, LONG_TOKENS = 10, 300
# The long answers come at a model's pace (as the fake sends them: 100 tokens/s by default), so
# that tokens travel as they do in use, a few to a frame, not a whole answer in one.
LONG_PACE = float(os.environ.get("BENCH_PROFILE_TOKENS_PER_S", "100"))
LOADS = {
    # name: (answer tokens, tokens/s (None: as fast as the upstream can), turns in the CPU batch, lanes)
    "short": (SHORT_TOKENS, None, int(os.environ.get("BENCH_PROFILE_TURNS", "300")), 50),
    "long": (LONG_TOKENS, LONG_PACE, int(os.environ.get("BENCH_PROFILE_LONG_TURNS", "40")), 20),
}
RATE_HZ = 100
NATIVE = os.environ.get("BENCH_PROFILE_NATIVE", "") not in ("", "0")
SHARED = ("rabbitmq", "redis")


def py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy is missing: it is in the dev extras (`make install`, or pip install py-spy)")
    return found


async def batch(
    target: Target, tokens: int, pace: float | None, turns: int, lanes: int, meter: CpuMeter
) -> dict[str, Any]:
    """`turns` turns on `lanes` lanes; CPU by group from before the first to a second after the last."""
    todo = iter(range(turns))
    failed: list[str] = []

    async def lane(i: int) -> None:
        for _ in todo:
            reply = await _one(target, i, tokens, pace)
            if reply.status != 200 or not reply.ended:
                failed.append(f"status {reply.status}: {reply.tail[-160:]!r}")

    before, t0 = meter.read(), time.perf_counter()
    await asyncio.gather(*(lane(i) for i in range(lanes)))
    wall = time.perf_counter() - t0
    await asyncio.sleep(1)  # what follows a turn's last frame: history's write, the budgets' reconciliation
    after = meter.read()
    if failed:
        raise RuntimeError(f"{len(failed)} of {turns} turns failed, the first: {failed[0]}")
    return {
        "turns": turns,
        "wall_s": round(wall, 2),
        "turns_per_s": round(turns / wall, 1),
        "cpu_ms": {k: round(after[k] - before[k], 1) for k in after},
    }


async def profiled(
    target: Target, tokens: int, pace: float | None, lanes: int, pids: dict[str, int], outdir: Path, label: str
) -> Any:
    """Load on `lanes` lanes while py-spy samples every service for WINDOW_S."""
    stopping = False

    async def lane(i: int) -> None:
        while not stopping:
            await _one(target, i, tokens, pace)

    tasks = [asyncio.create_task(lane(i)) for i in range(lanes)]
    await asyncio.sleep(1.5)
    spies: dict[str, tuple[asyncio.subprocess.Process, Path]] = {}
    for service, pid in pids.items():
        out = outdir / f"{label}-{service}.txt"
        command = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--duration", str(int(WINDOW_S))]
        command += ["--format", "raw", "--native" if NATIVE else "--nonblocking", "--full-filenames"]
        command += ["--output", str(out)]
        spy = await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        spies[service] = (spy, out)
    summaries = {}
    for service, (process, out) in spies.items():
        _, err = await asyncio.wait_for(process.communicate(), WINDOW_S + 60)
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy on {service} failed ({process.returncode}): {err.decode()[-500:]}")
        summaries[service] = pyspy.summarise(pyspy.parse_raw(out.read_text()))
    stopping = True
    await asyncio.gather(*tasks)
    return summaries


async def main() -> None:
    py_spy()
    key = "pk_bench_" + secrets.token_urlsafe(18)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-profile-"))
    with fake_provider_process(workdir / "fake.log") as upstream:
        models = workdir / "models.json"
        _models_file(models, upstream)
        async with system("profile", key, parley_env(models)) as stack:
            result = await _measure(stack, key, upstream, workdir)
    print(f"wrote {write('profile', result)}; raw py-spy files in {workdir}")


async def _measure(stack: Stack, key: str, upstream: str, workdir: Path) -> dict[str, Any]:
    target = (await parley_targets(stack, key))[f"parley_{ENDPOINT}"]
    pids = {name: p.pid for name, p in stack.processes.items()}
    shared = {}
    for name, port in (("rabbitmq", 5672), ("redis", 6379)):
        pid = pid_listening_on(port)
        if pid is None:
            raise RuntimeError(f"no process listens on {port} ({name})")
        shared[name] = [pid]
    meter = CpuMeter({**{n: [p] for n, p in pids.items()}, **shared})
    for tokens, _, _, _ in LOADS.values():  # warm-up
        await asyncio.gather(*(_one(target, lane, tokens) for lane in range(10)))
    # The shared servers' background (other work on this machine): CPU per second while idle.
    before, t0 = meter.read(), time.perf_counter()
    await asyncio.sleep(3)
    after = meter.read()
    idle = {s: (after[s] - before[s]) / (time.perf_counter() - t0) for s in SHARED}
    batches: dict[str, Any] = {}
    for load, (tokens, pace, turns, lanes) in LOADS.items():
        batches[load] = b = await batch(target, tokens, pace, turns, lanes, meter)
        print(f"{load:6} batch: {turns} turns in {b['wall_s']} s ({b['turns_per_s']} turns/s)", flush=True)
    tops: dict[str, Any] = {}
    for load, (tokens, pace, _, lanes) in LOADS.items():
        tops[load] = await profiled(target, tokens, pace, lanes, pids, workdir, load)
        print(f"{load:6} profiled: {WINDOW_S:.0f} s of py-spy on {len(pids)} services", flush=True)
    per_turn: dict[str, dict[str, float]] = {}
    for load, b in batches.items():
        per_turn[load] = {}
        for name, ms in b["cpu_ms"].items():
            if name in SHARED:
                ms = max(0.0, ms - idle[name] * (b["wall_s"] + 1))
            per_turn[load][name] = ms / b["turns"]
    extra_tokens = LONG_TOKENS - SHORT_TOKENS
    services: dict[str, Any] = {}
    for name in [*pids, *SHARED]:
        short, long = per_turn["short"][name], per_turn["long"][name]
        row: dict[str, Any] = {
            "cpu_ms_per_turn": round(short, 2),
            "cpu_ms_per_long_turn": round(long, 2),
            "cpu_ms_per_1000_tokens": round(1000 * (long - short) / extra_tokens, 1),
        }
        if name in SHARED:
            row["idle_background_cpu_ms_per_s"] = round(idle[name], 1)
        for load in LOADS:
            if name in tops[load]:
                row[f"top_{load}"] = tops[load][name]
        services[name] = row

    def total(names: list[str], field: str) -> float:
        return round(sum(services[n][field] for n in names), 2)

    parley = list(pids)
    result = {
        "endpoint": ENDPOINT,
        "loads": {
            k: {"answer_tokens": t, "tokens_per_s": p, "turns": n, "lanes": c} for k, (t, p, n, c) in LOADS.items()
        },
        "py_spy": {"rate_hz": RATE_HZ, "window_s": WINDOW_S, "native": NATIVE},
        "total": {
            "parley_cpu_ms_per_turn": total(parley, "cpu_ms_per_turn"),
            "with_rabbitmq_redis_cpu_ms_per_turn": total([*parley, *SHARED], "cpu_ms_per_turn"),
            "parley_cpu_ms_per_1000_tokens": total(parley, "cpu_ms_per_1000_tokens"),
            "with_rabbitmq_redis_cpu_ms_per_1000_tokens": total([*parley, *SHARED], "cpu_ms_per_1000_tokens"),
        },
        "services": services,
        "batches": batches,
        "raw_profiles": str(workdir),
        "load_average": os.getloadavg(),
    }
    print_report(result)
    return result


def print_report(result: dict[str, Any]) -> None:
    print(f"\n{'service':16} {'ms/turn':>8} {'ms/1k tok':>9}  top costs (share of py-spy samples)")
    for name, row in result["services"].items():
        print(f"{name:16} {row['cpu_ms_per_turn']:8.2f} {row['cpu_ms_per_1000_tokens']:9.1f}")
        for load in ("short", "long"):
            top = row.get(f"top_{load}")
            if top:
                waiting = top["wait_samples"] / max(1, top["samples"] + top["wait_samples"])
                libraries = ", ".join(f"{n} {s:.0%}" for n, s in top["by_library"])
                print(f"    {load:5} libraries:    {libraries} (samples at a wait, left out: {waiting:.0%})")
                print(f"    {load:5} functions:    " + ", ".join(f"{n} {s:.0%}" for n, s in top["by_function"]))
                print(f"    {load:5} Parley sites: " + ", ".join(f"{n} {s:.0%}" for n, s in top["by_parley_frame"]))
    print(f"total: {result['total']}")
