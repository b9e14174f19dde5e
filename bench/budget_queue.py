"""How well the provider-budget queue tells a burst its wait.

120 turns sent at once to a model limited to 30 requests a minute (served by the fake provider
server, which answers at once and logs when each request arrived), through the whole system
with the default budget settings: four windows deep, so the last thirty wait three minutes.
Every `queued` frame a client gets carries an estimated wait; the truth is when that turn's
answer started (its `meta` frame). Reported: the error of every frame (estimate minus truth)
in seconds and relative to the truth, at p50 and p90; how many frames each waiting turn got
and how many repeated the one before; the most requests the provider received in any 60 s
(its own log); and whether every turn completed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from parley_dev.fake_providers import fake_provider_process
from tests.support.sse import frames

from .stats import percentile, write
from .system import system

BURST = 120
RPM = 30


def registry_file(workdir: Path, fake_url: str) -> Path:
    model = {
        "provider": "openai",
        "upstream_model": "burst-test",
        "context_window": 8192,
        "max_output_tokens": 1024,
        "input_price_per_mtok": 0,
        "output_price_per_mtok": 0,
        "requests_per_minute": RPM,
    }
    # The demo provider too: the stack is ready once a worker consumes its queue.
    providers = {"openai": {"kind": "openai", "base_url": f"{fake_url}/v1"}, "demo": {"kind": "demo"}}
    models = {"burst": model, "demo": {**model, "provider": "demo", "requests_per_minute": None}}
    path = workdir / "models.json"
    path.write_text(json.dumps({"default_model": "burst", "providers": providers, "models": models}))
    return path


async def one_turn(client: httpx.AsyncClient, conversation: str, i: int) -> dict[str, Any]:
    """The turn's frames as (seconds since the epoch of the run, event, data)."""
    seen: list[tuple[float, str, dict[str, Any]]] = []
    async with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": f"Burst question {i}"}
    ) as response:
        response.raise_for_status()
        async for frame in frames(response):
            seen.append((time.monotonic(), frame.event, frame.data))
            if frame.event in ("done", "error"):
                break
    return {"frames": seen}


async def main() -> None:
    key = "pk_bench_" + secrets.token_urlsafe(18)
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-queue-"))
    with fake_provider_process(workdir / "fake.log") as fake_url:
        env = {
            "PARLEY_MODELS_FILE": str(registry_file(workdir, fake_url)),
            "PARLEY_WORKER_PROVIDERS": '["demo", "openai"]',
            "PARLEY_PROVIDER_API_KEYS": json.dumps({"openai": "sk-bench"}),
        }
        turns, elapsed = await burst(key, env)
        async with httpx.AsyncClient(base_url=fake_url) as fake:
            arrived = [call["seen_at"] for call in (await fake.get("/_fake/requests")).json()]
    report(turns, elapsed, arrived)


async def burst(key: str, env: dict[str, str]) -> tuple[list[dict[str, Any]], float]:
    async with system("queue", key, env) as stack:
        async with httpx.AsyncClient(
            base_url=stack.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=900,
            limits=httpx.Limits(max_connections=BURST + 10),
        ) as client:
            conversations = []
            for _ in range(BURST):
                reply = await client.post("/v1/conversations", json={"title": "bench"})
                reply.raise_for_status()
                conversations.append(reply.json()["id"])
            start = time.monotonic()
            turns = await asyncio.gather(*(one_turn(client, c, i) for i, c in enumerate(conversations)))
            return turns, time.monotonic() - start


def report(turns: list[dict[str, Any]], elapsed: float, arrived: list[float]) -> None:
    errors: list[float] = []
    relative: list[float] = []
    long_relative: list[float] = []  # of frames 10 s or more before the start
    per_turn: list[int] = []
    repeated = 0
    completed = 0
    for turn in turns:
        frames = turn["frames"]
        completed += frames[-1][1] == "done"
        meta = next((at for at, event, _ in frames if event == "meta"), None)
        if meta is None:
            continue
        queued = [(at, data) for at, event, data in frames if event == "queued"]
        if queued:
            per_turn.append(len(queued))
        for (_, before), (_, after) in itertools.pairwise(queued):
            repeated += (before["position"], before["estimated_wait_ms"]) == (
                after["position"],
                after["estimated_wait_ms"],
            )
        for at, data in queued:
            actual = meta - at
            error = data["estimated_wait_ms"] / 1000 - actual
            errors.append(error)
            relative.append(abs(error) / max(actual, 1.0))
            if actual >= 10:
                long_relative.append(abs(error) / actual)
    most_a_minute = max(sum(1 for t in arrived if s <= t < s + 60) for s in arrived)
    absolute = [abs(e) for e in errors]
    result = {
        "burst": BURST,
        "requests_per_minute": RPM,
        "completed": completed,
        "seconds": round(elapsed, 1),
        "provider_requests": len(arrived),
        "most_provider_requests_in_60s": most_a_minute,
        "queued_frames": len(errors),
        "frames_per_waiting_turn": {"p50": percentile(per_turn, 50), "max": max(per_turn)},
        "repeated_frames": repeated,
        "error_s": {
            "p50": round(percentile(absolute, 50), 3),
            "p90": round(percentile(absolute, 90), 3),
            "mean_signed": round(sum(errors) / len(errors), 3),
        },
        # |estimate - truth| / truth (the truth taken as at least 1 s).
        "error_relative": {"p50": round(percentile(relative, 50), 4), "p90": round(percentile(relative, 90), 4)},
        "error_relative_10s_or_more_before": {
            "frames": len(long_relative),
            "p50": round(percentile(long_relative, 50), 4),
            "p90": round(percentile(long_relative, 90), 4),
        },
    }
    print(
        f"burst of {BURST} at {RPM} RPM: {completed} completed in {result['seconds']} s, "
        f"the provider got {len(arrived)} requests, at most {most_a_minute} in any 60 s"
    )
    print(
        f"queued frames: {len(errors)} ({result['frames_per_waiting_turn']['p50']} per waiting turn at p50, "
        f"{repeated} repeating the one before)"
    )
    print(
        f"estimate error: p50 {result['error_s']['p50']} s / p90 {result['error_s']['p90']} s "
        f"(mean {result['error_s']['mean_signed']:+} s); relative p50 {result['error_relative']['p50']:.1%} "
        f"/ p90 {result['error_relative']['p90']:.1%} ({len(long_relative)} frames 10 s or more before the "
        f"start: p50 {percentile(long_relative, 50):.1%} / p90 {percentile(long_relative, 90):.1%})"
    )
    path = write("queue", result)
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
