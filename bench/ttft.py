"""Time to first token and total stream time: through Parley vs straight to the demo provider.

Both sides use the same demo provider with the same pace (first-token delay, tokens/s), in
the same run, so the difference is what Parley adds: HTTP, RabbitMQ, the orchestrator's
history calls, the worker, the replay log and SSE. 200 requests at concurrency 1 and 50.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

from parley.v1 import chat_pb2
from parley_worker.providers import TextChunk
from parley_worker.providers.demo import DemoProvider
from tests.support.sse import frames

from .stats import summary_ms, write
from .system import system

REQUESTS = 200
CONCURRENCY = (1, 50)
FIRST_TOKEN_DELAY_MS = 20
TOKENS_PER_S = 1000.0
PROMPT = "How does Parley stream an answer token by token?"


async def direct(n: int, concurrency: int) -> tuple[list[float], list[float]]:
    provider = DemoProvider(FIRST_TOKEN_DELAY_MS / 1000, TOKENS_PER_S)
    job = chat_pb2.ProviderJob(
        messages=[
            chat_pb2.PromptMessage(role="system", content="x"),
            chat_pb2.PromptMessage(role="user", content=PROMPT),
        ]
    )
    ttft: list[float] = []
    total: list[float] = []

    async def one() -> None:
        start = time.perf_counter()
        first = None
        async for chunk in provider.stream(job):
            if first is None and isinstance(chunk, TextChunk):
                first = time.perf_counter() - start
        assert first is not None
        ttft.append(first)
        total.append(time.perf_counter() - start)

    await _lanes(n, concurrency, lambda _lane: one())
    return ttft, total


async def through_parley(client: httpx.AsyncClient, n: int, concurrency: int) -> tuple[list[float], list[float]]:
    conversations = []
    for _ in range(concurrency):
        reply = await client.post("/v1/conversations", json={"title": "bench"})
        reply.raise_for_status()
        conversations.append(reply.json()["id"])
    ttft: list[float] = []
    total: list[float] = []

    async def one(lane: int) -> None:
        start = time.perf_counter()
        first = None
        async with client.stream(
            "POST", f"/v1/conversations/{conversations[lane]}/messages", json={"content": PROMPT}
        ) as response:
            response.raise_for_status()
            async for frame in frames(response):
                if frame.event == "error":
                    raise RuntimeError(f"stream ended with an error: {frame.data}")
                if first is None and frame.event == "delta":
                    first = time.perf_counter() - start
                if frame.event == "done":
                    break
        assert first is not None
        ttft.append(first)
        total.append(time.perf_counter() - start)

    await _lanes(n, concurrency, one)
    return ttft, total


async def _lanes(n: int, concurrency: int, run: Any) -> None:
    remaining = iter(range(n))

    async def lane(i: int) -> None:
        for _ in remaining:
            await run(i)

    await asyncio.gather(*(lane(i) for i in range(concurrency)))


async def main() -> None:
    key = "pk_bench_" + secrets.token_urlsafe(18)
    results: dict[str, Any] = {
        "requests": REQUESTS,
        "demo_pace": {"first_token_delay_ms": FIRST_TOKEN_DELAY_MS, "tokens_per_s": TOKENS_PER_S},
        "runs": [],
    }
    extra_env = {
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": str(FIRST_TOKEN_DELAY_MS),
        "PARLEY_DEMO_TOKENS_PER_S": str(TOKENS_PER_S),
    }
    async with system("ttft", key, extra_env) as stack:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
        ) as client:
            await through_parley(client, 10, 2)  # warm-up: connections, caches, JIT-free paths
            for concurrency in CONCURRENCY:
                d_ttft, d_total = await direct(REQUESTS, concurrency)
                p_ttft, p_total = await through_parley(client, REQUESTS, concurrency)
                run: dict[str, Any] = {
                    "concurrency": concurrency,
                    "direct": {"ttft_ms": summary_ms(d_ttft), "total_ms": summary_ms(d_total)},
                    "parley": {"ttft_ms": summary_ms(p_ttft), "total_ms": summary_ms(p_total)},
                }
                for metric in ("ttft_ms", "total_ms"):
                    run[f"added_{metric}"] = {
                        p: round(run["parley"][metric][p] - run["direct"][metric][p], 2) for p in ("p50", "p95", "p99")
                    }
                    run[f"ratio_{metric.removesuffix('_ms')}"] = {
                        p: round(run["parley"][metric][p] / run["direct"][metric][p], 3) for p in ("p50", "p95", "p99")
                    }
                results["runs"].append(run)
                _print(run)
    path = write("ttft", results)
    print(f"wrote {path}")


def _print(run: dict[str, Any]) -> None:
    c = run["concurrency"]
    for metric in ("ttft_ms", "total_ms"):
        d, p, a = run["direct"][metric], run["parley"][metric], run[f"added_{metric}"]
        r = run[f"ratio_{metric.removesuffix('_ms')}"]
        print(
            f"c={c:<3} {metric:9} direct p50/p95/p99 {d['p50']:7.2f} {d['p95']:7.2f} {d['p99']:7.2f} | "
            f"parley {p['p50']:7.2f} {p['p95']:7.2f} {p['p99']:7.2f} | added p50 {a['p50']:6.2f} ms | "
            f"ratio p50 {r['p50']:.3f} p99 {r['p99']:.3f}",
            flush=True,
        )
