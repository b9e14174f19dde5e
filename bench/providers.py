"""Provider streams through one worker vs straight from the provider, and how fast a cancel
reaches the provider.

- 100 concurrent long streams (300 tokens at 100 tokens/s each) read straight from the fake
  provider server vs the same streams through Parley (gateway, orchestrator, one worker):
  throughput ratio.
- The worker's CPU time per 1,000 tokens streamed.
- Cancel → upstream connection closed (as the fake provider sees it), p50/p99.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from parley_dev.fake_providers import fake_provider_process
from parley_dev.stack import Stack
from tests.support.sse import frames

from .stats import summary_ms, write
from .system import system

STREAMS = 100
TOKENS = 300
TOKENS_PER_S = 100
CANCELS = 40


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _directive(**kw: Any) -> str:
    return f"[[fake {json.dumps(kw)}]]"


async def _direct(fake: str, n: int) -> tuple[float, int]:
    """n concurrent streams straight from the fake (OpenAI format); (wall seconds, tokens)."""
    body = {
        "model": "llama-test",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "go " + _directive(tokens=TOKENS, tokens_per_s=TOKENS_PER_S)}],
    }
    limits = httpx.Limits(max_connections=n + 10)
    async with httpx.AsyncClient(base_url=fake, timeout=120, limits=limits) as client:

        async def one() -> int:
            tokens = 0
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                async for frame in frames(r):
                    if isinstance(frame.data, dict) and "content" in json.dumps(frame.data.get("choices")):
                        tokens += 1
            return tokens

        start = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - start, sum(counts)


async def _through_parley(client: httpx.AsyncClient, conversations: list[str]) -> tuple[float, int]:
    content = "go " + _directive(tokens=TOKENS, tokens_per_s=TOKENS_PER_S)

    async def one(conversation: str) -> int:
        async with client.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": "local"}
        ) as r:
            async for frame in frames(r):
                if frame.event == "usage":
                    return int(frame.data["output_tokens"])
                if frame.event == "error":
                    raise RuntimeError(f"stream failed: {frame.data}")
        raise RuntimeError("stream ended without usage")

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(c) for c in conversations))
    return time.perf_counter() - start, sum(counts)


async def _cancel_delays(client: httpx.AsyncClient, fake: httpx.AsyncClient, conversation: str) -> list[float]:
    delays = []
    for i in range(CANCELS):
        await fake.delete("/_fake/requests")
        content = f"cancel me {i} " + _directive(tokens=2000, tokens_per_s=50)
        async with client.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": "local"}
        ) as r:
            response_id = r.headers["x-parley-response-id"]
            deltas = 0
            async for frame in frames(r):
                if frame.event == "delta":
                    deltas += 1
                    if deltas == 3:
                        cancelled_at = time.time()
                        await client.post(f"/v1/responses/{response_id}/cancel")
                if frame.event in ("done", "error"):
                    break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (request,) = (await fake.get("/_fake/requests")).json()
            if request["client_closed"]:
                delays.append(request["closed_at"] - cancelled_at)
                break
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the upstream connection was never closed")
    return delays


async def main() -> None:
    key = "pk_bench_" + secrets.token_urlsafe(18)
    logs = Path(tempfile.mkdtemp(prefix="parley-bench-fake-"))
    with fake_provider_process(logs / "fake.log") as fake_url:
        models = {
            "default_model": "demo",
            "providers": {"demo": {"kind": "demo"}, "local": {"kind": "openai", "base_url": f"{fake_url}/v1"}},
            "models": {
                name: {
                    "provider": name,
                    "upstream_model": "llama-test",
                    "context_window": 100_000,
                    "max_output_tokens": 4000,
                    "input_price_per_mtok": 0,
                    "output_price_per_mtok": 0,
                }
                for name in ("demo", "local")
            },
        }
        (logs / "models.json").write_text(json.dumps(models))
        extra_env = {
            "PARLEY_MODELS_FILE": str(logs / "models.json"),
            "PARLEY_WORKER_PROVIDERS": '["demo", "local"]',
        }
        async with system("providers", key, extra_env) as stack:
            result = await _measure(stack, key, fake_url)
    print(f"wrote {write('providers', result)}")


async def _measure(stack: Stack, key: str, fake_url: str) -> dict[str, Any]:
    worker_pid = stack.processes["provider-worker"].pid
    limits = httpx.Limits(max_connections=STREAMS + 20)
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=120, limits=limits) as client,
        httpx.AsyncClient(base_url=fake_url, timeout=10) as fake,
    ):
        conversations = [(await client.post("/v1/conversations", json={})).json()["id"] for _ in range(STREAMS)]
        await _direct(fake_url, 5)  # warm-up
        direct_s, direct_tokens = await _direct(fake_url, STREAMS)
        cpu_before = _cpu_s(worker_pid)
        parley_s, parley_tokens = await _through_parley(client, conversations)
        worker_cpu = _cpu_s(worker_pid) - cpu_before
        delays = await _cancel_delays(client, fake, conversations[0])
    result = {
        "streams": STREAMS,
        "tokens_per_stream": TOKENS,
        "pace_tokens_per_s": TOKENS_PER_S,
        "direct": {
            "wall_s": round(direct_s, 2),
            "tokens": direct_tokens,
            "tokens_per_s": round(direct_tokens / direct_s),
        },
        "parley": {
            "wall_s": round(parley_s, 2),
            "tokens": parley_tokens,
            "tokens_per_s": round(parley_tokens / parley_s),
        },
        "throughput_ratio": round((parley_tokens / parley_s) / (direct_tokens / direct_s), 3),
        "worker_cpu_ms_per_1000_tokens": round(1000 * worker_cpu / parley_tokens * 1000, 1),
        "cancel_to_upstream_close_ms": summary_ms(delays),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    return result
