"""Provider budgets and user ledgers on a real Redis: exact under concurrency, fair, leak-free."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from parley_common.user_budgets import MonthlyUsage
from parley_dev.infra import Infra
from parley_orchestrator.budgets import BudgetLimits, ProviderBudget

PROCESSES = 4
PER_PROCESS = 50
TOKENS = 100
WINDOW_S = 2.0


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


async def _reserve_all(redis_url: str, namespace: str, limits: BudgetLimits, process: int) -> list[tuple[str, bool]]:
    client = Redis.from_url(redis_url)
    budget = ProviderBudget(client, namespace, window_s=WINDOW_S)
    ids = [f"r{process}-{i}" for i in range(PER_PROCESS)]
    results = await asyncio.gather(
        *(budget.acquire("m", limits, rid, f"user{i % 7}", TOKENS) for i, rid in enumerate(ids))
    )
    await client.aclose()
    return [(rid, result.admitted) for rid, result in zip(ids, results, strict=True)]


def _process(
    redis_url: str,
    namespace: str,
    limits: BudgetLimits,
    process: int,
    start: multiprocessing.synchronize.Barrier,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    start.wait()  # every process fires its 50 reservations at the same moment
    out.put(asyncio.run(_reserve_all(redis_url, namespace, limits, process)))


def reserve_from_processes(redis_url: str, namespace: str, limits: BudgetLimits) -> list[tuple[str, bool]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    out: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    processes = [
        context.Process(target=_process, args=(redis_url, namespace, limits, i, start, out)) for i in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    results = [item for _ in processes for item in out.get(timeout=60)]
    for p in processes:
        p.join(30)
        assert p.exitcode == 0
    return results


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (BudgetLimits(requests_per_minute=None, tokens_per_minute=37 * TOKENS), 37),
        (BudgetLimits(requests_per_minute=23, tokens_per_minute=None), 23),
        (BudgetLimits(requests_per_minute=60, tokens_per_minute=41 * TOKENS + 99), 41),
    ],
)
async def test_200_concurrent_reservations_from_4_processes_admit_exactly_the_budget_and_leak_nothing(
    infra: Infra, redis: Redis, limits: BudgetLimits, expected: int
) -> None:
    namespace = "tb" + uuid.uuid4().hex[:10]
    results = await asyncio.to_thread(reserve_from_processes, infra.redis_url, namespace, limits)
    assert len(results) == PROCESSES * PER_PROCESS
    admitted = [rid for rid, ok in results if ok]
    assert len(admitted) == expected, "exactly the budget, never more"
    budget = ProviderBudget(redis, namespace, window_s=WINDOW_S)
    state = await budget.state("m")
    assert (state.requests, state.tokens, state.waiting) == (expected, expected * TOKENS, 200 - expected)

    for rid, ok in results:
        if not ok:
            await budget.leave("m", rid)
    reconciled = admitted[::2]
    for rid in reconciled:
        assert await budget.reconcile("m", rid, 7)
        assert await budget.reconcile("m", rid, 7), "reconcile is idempotent"
    for rid in admitted[1::2]:
        assert await budget.release("m", rid)
        assert not await budget.release("m", rid), "a second release changes nothing"
    state = await budget.state("m")
    assert (state.requests, state.tokens, state.waiting) == (len(reconciled), 7 * len(reconciled), 0)
    prefix = budget.prefix("m")
    assert await redis.llen(f"{prefix}:ring") == 0 and not await redis.keys(f"{prefix}:wait:*")
    assert int(await redis.get(f"{prefix}:wsum") or 0) == 0

    # Once the window has slid past them, nothing at all is held.
    deadline = time.monotonic() + 10
    while (state := await budget.state("m")).requests:
        assert time.monotonic() < deadline, "reservations outlived their window"
        await asyncio.sleep(0.1)
    assert (state.requests, state.tokens, state.waiting) == (0, 0, 0)
    assert await redis.hlen(f"{prefix}:tok") == 0


async def test_the_queue_is_round_robin_across_users_and_fifo_within_one(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=60)
    limits = BudgetLimits(requests_per_minute=None, tokens_per_minute=100)
    assert (await budget.acquire("m", limits, "blocker", "zed", 100)).admitted
    waiting = [("a1", "ann"), ("a2", "ann"), ("a3", "ann"), ("b1", "bob"), ("c1", "cy"), ("b2", "bob")]
    for rid, user in waiting:
        assert not (await budget.acquire("m", limits, rid, user, 100)).admitted
    positions = {rid: (await budget.acquire("m", limits, rid, user, 100)).position for rid, user in waiting}
    assert positions == {"a1": 1, "b1": 2, "c1": 3, "a2": 4, "b2": 5, "a3": 6}
    # A request that arrives later never jumps the queue, even while it would fit.
    order = []
    await budget.release("m", "blocker")
    for _ in range(len(waiting)):
        for rid, user in waiting:
            if rid not in order and (await budget.acquire("m", limits, rid, user, 100)).admitted:
                order.append(rid)
                await budget.release("m", rid)
                break
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]


async def test_a_waiter_that_stops_asking_loses_its_place(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=60, stale_s=0.3)
    limits = BudgetLimits(requests_per_minute=1, tokens_per_minute=None)
    assert (await budget.acquire("m", limits, "first", "ann", 1)).admitted
    assert (await budget.acquire("m", limits, "gone", "bob", 1)).position == 1
    assert (await budget.acquire("m", limits, "next", "cy", 1)).position == 2
    await asyncio.sleep(0.4)  # "gone" never asks again (its orchestrator died)
    assert (await budget.acquire("m", limits, "next", "cy", 1)).position == 1
    assert (await budget.state("m")).waiting == 1


async def test_the_wait_estimate_follows_the_window(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=30)
    limits = BudgetLimits(requests_per_minute=2, tokens_per_minute=None)
    assert (await budget.acquire("m", limits, "r1", "ann", 1)).admitted
    await asyncio.sleep(0.3)
    assert (await budget.acquire("m", limits, "r2", "ann", 1)).admitted
    started = time.monotonic()
    first = await budget.acquire("m", limits, "r3", "bob", 1)
    second = await budget.acquire("m", limits, "r4", "cy", 1)
    between_ms = (time.monotonic() - started) * 1000
    assert first.position == 1 and 25_000 <= first.wait_ms <= 29_800, "when r1 leaves the window"
    assert second.position == 2 and second.wait_ms <= 30_000, "when r2 leaves it"
    # Estimates are taken at two moments at most `between_ms` apart; r2 leaves the window
    # at least 300 ms after r1, so the second waiter's estimate is that much later, less
    # the time that passed between the two questions (and a millisecond of rounding each).
    assert second.wait_ms >= first.wait_ms + 300 - between_ms - 2


async def test_a_users_usage_is_charged_once_per_response(redis: Redis) -> None:
    usage = MonthlyUsage(redis, "tb" + uuid.uuid4().hex[:10])
    assert await usage.charge("r1", "ann", 120, 30)
    assert not await usage.charge("r1", "ann", 120, 30), "a redelivered completion is not charged again"
    assert await usage.charge("r2", "ann", 80, 20)
    spent = await usage.spent("ann")
    assert (spent.tokens, spent.cost_micros) == (200, 50)
    assert (await usage.spent("bob")).tokens == 0
