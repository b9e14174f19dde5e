"""Budget checks and orchestrator throughput.

1. Budget check latency on the local Redis: the provider budget's one Lua call per request
   (admitted, and while 100 requests wait in the queue) and the gateway's monthly user check.
2. Orchestrator throughput: one orchestrator process and the history service; 1,000 chat turns
   (each its own conversation) published at once to its queue, through append-to-history,
   routing, counting and fitting the context, the provider budget and the job publish; the rate
   is measured from the first publish to the 1,000th provider job. No worker runs: the jobs are
   counted off the provider queue.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BudgetLimits, ProviderBudget
from parley_common.budgets.users import DEFAULT_PLANS, MonthlyUsage, UserBudgets
from parley_common.clients.history import HistoryClient
from parley_common.messaging.amqp import envelope
from parley_common.messaging.topology import CHAT_REQUEST, SCHEMA_VERSION, Topology
from parley_dev.infra import provide
from parley_dev.stack import Stack
from tests.support.models import demo_model
from tests.support.polling import eventually
from tests.support.stacks import stack_config

from .stats import summary_ms, write

CHECKS = 5000
WAITERS = 100
TURNS = 1000
LIMITS = BudgetLimits(requests_per_minute=10_000_000, tokens_per_minute=10_000_000_000)


async def budget_latency(redis_url: str) -> dict[str, dict[str, float]]:
    redis = Redis.from_url(redis_url)
    namespace = "bench" + uuid.uuid4().hex[:8]
    budget = ProviderBudget(redis, namespace)
    users = UserBudgets(MonthlyUsage(redis, namespace), DEFAULT_PLANS, {}, "default")
    try:

        async def timed(call: Any, n: int) -> list[float]:
            out = []
            for i in range(n):
                start = time.perf_counter()
                await call(i)
                out.append(time.perf_counter() - start)
            return out

        for i in range(200):  # warm the connection and the script cache
            await budget.acquire("warm", LIMITS, f"w{i}", "u", 10)
        admitted = await timed(lambda i: budget.acquire("m", LIMITS, f"a{i}", f"user{i % 50}", 1200), CHECKS)
        full = BudgetLimits(requests_per_minute=1, tokens_per_minute=None)
        await budget.acquire("q", full, "holder", "u0", 1)
        for i in range(WAITERS):
            await budget.acquire("q", full, f"wait{i}", f"user{i % 20}", 1200)
        queued = await timed(lambda i: budget.acquire("q", full, f"wait{i % WAITERS}", f"user{i % 20}", 1200), CHECKS)
        user = await timed(lambda i: users.check(f"user{i % 50}"), CHECKS)
    finally:
        await redis.aclose()
    return {
        "provider_budget_admit": summary_ms(admitted),
        f"provider_budget_queued_{WAITERS}": summary_ms(queued),
        "user_monthly_check": summary_ms(user),
    }


# The demo model, with limits far above what the benchmark asks of it.
REGISTRY = {
    "default_model": "demo",
    "providers": {"demo": {"kind": "demo"}},
    "models": {
        "demo": demo_model(requests_per_minute=LIMITS.requests_per_minute, tokens_per_minute=LIMITS.tokens_per_minute)
    },
}


async def wait_for_consumer(channel: aio_pika.abc.AbstractChannel, queue: str, timeout_s: float = 60) -> None:
    async def consumed() -> bool:
        declared = await channel.declare_queue(queue, passive=True)
        return (declared.declaration_result.consumer_count or 0) > 0

    await eventually(consumed, timeout_s, f"a consumer of {queue}", interval_s=0.1)


async def throughput(stack: Stack, amqp_url: str) -> dict[str, float]:
    topology = Topology(stack.config.namespace)
    history = HistoryClient(f"127.0.0.1:{stack.history_port}")
    await eventually(history.serving, 60, "history serving", interval_s=0.1)
    conversations = [(await history.create_conversation("bench", "bench")).id for _ in range(TURNS)]
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await wait_for_consumer(channel, topology.requests_queue)
    jobs = await topology.declare_provider_queue(channel, "demo")
    await jobs.purge()
    got = 0
    finished = asyncio.Event()

    async def on_job(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal got
        got += 1
        if got == TURNS:
            finished.set()

    await jobs.consume(on_job, no_ack=True)
    publisher = await connection.channel()
    requests = [
        chat_pb2.ChatRequest(
            version=SCHEMA_VERSION,
            response_id="r_" + uuid.uuid4().hex,
            user_id="bench",
            conversation_id=conversation,
            client_message_id=f"m{i}",
            content=f"Question {i}: how does Parley keep a stream alive when the client reconnects?",
            created_at_ms=int(time.time() * 1000),
        )
        for i, conversation in enumerate(conversations)
    ]
    start = time.perf_counter()
    for request in requests:
        await publisher.default_exchange.publish(
            envelope(request, message_type=CHAT_REQUEST, idempotency_key=request.response_id),
            routing_key=topology.requests_queue,
        )
    await asyncio.wait_for(finished.wait(), timeout=300)
    elapsed = time.perf_counter() - start
    await connection.close()
    await history.close()
    return {"turns": TURNS, "seconds": round(elapsed, 3), "requests_per_s": round(TURNS / elapsed, 1)}


async def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-orchestrator-"))
    with provide() as infra:
        latency = await budget_latency(infra.redis_url)
        key = "pk_bench_" + secrets.token_urlsafe(18)
        stack = Stack(stack_config(infra, workdir, "bench", key, {"PARLEY_ORCHESTRATOR_PREFETCH": "256"}, REGISTRY))
        stack.start_service("history")
        stack.start_service("orchestrator")
        try:
            rate = await throughput(stack, infra.amqp_url)
        finally:
            await stack.stop()
    print("budget check latency (ms, local Redis, one call each):")
    for name, figures in latency.items():
        print(f"  {name:32s} p50 {figures['p50']:6.3f}  p95 {figures['p95']:6.3f}  p99 {figures['p99']:6.3f}")
    print(
        f"orchestrator throughput: {rate['requests_per_s']} requests/s "
        f"({rate['turns']} turns in {rate['seconds']} s, one process, history on SQLite)"
    )
    path = write("orchestrator", {"budget_check_ms": latency, "orchestrator": rate})
    print(f"written to {path}")


if __name__ == "__main__":
    asyncio.run(main())
