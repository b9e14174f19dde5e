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

from parley_common.budgets.providers import Admission, BucketState, BudgetLimits, ProviderBudget, send_entry
from parley_common.budgets.users import MonthlyUsage, PlanLimits, ResponseRecord, UserBudgets
from parley_common.errors import RateLimited
from parley_dev.infra import Infra
from tests.support.polling import eventually

PROCESSES = 4
PER_PROCESS = 50
TOKENS = 100
# Nothing slides out of the window while the processes race, however slow the machine.
WINDOW_S = 60.0


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


async def test_reservations_leave_with_the_window(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=1.0)
    limits = BudgetLimits(requests_per_minute=3, tokens_per_minute=None)
    for rid in ("a", "b", "c"):
        assert (await budget.acquire("m", limits, rid, "ann", TOKENS)).admitted
    assert await budget.reconcile("m", "b", 7)
    # Once the window has slid past them, nothing at all is held.

    async def empty() -> BucketState | None:
        state = await budget.state("m")
        return state if not state.requests else None

    state = await eventually(empty, 10, "no reservation left once the window passed", interval_s=0.1)
    assert (state.requests, state.tokens, state.waiting) == (0, 0, 0)
    assert await redis.hlen(f"{budget.prefix('m')}:tok") == 0


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
    await asyncio.sleep(0.3)  # r2 enters the window 300 ms after r1: the gap the estimates show
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


async def redis_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def counted_from(redis: Redis, budget: ProviderBudget, model: str, entry: str) -> int:
    """When the window started counting `entry` (Redis ms)."""
    score = await redis.zscore(budget.keys(model)[0], entry)
    assert score is not None, f"{entry} holds no place in the window"
    return int(score)


async def test_the_wait_estimate_counts_down_to_each_place_however_deep_in_the_queue(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=60)
    limits = BudgetLimits(requests_per_minute=2, tokens_per_minute=None)
    assert (await budget.acquire("m", limits, "r1", "ann", 1)).admitted
    await asyncio.sleep(0.3)  # r1 and r2 enter the window at two distinct moments
    assert (await budget.acquire("m", limits, "r2", "ann", 1)).admitted
    first, second = await counted_from(redis, budget, "m", "r1"), await counted_from(redis, budget, "m", "r2")
    waiters = [f"w{i}" for i in range(1, 6)]
    for rid in waiters:
        assert not (await budget.acquire("m", limits, rid, "bob", 1)).admitted
    # Two places a minute: w1 and w2 take r1's and r2's when they leave, w3 and w4 take theirs
    # a minute later, w5 r1's place again two minutes later (not "a window per round" from now).
    expected = {"w1": first + 60_000, "w2": second + 60_000, "w3": first + 120_000, "w4": second + 120_000}
    expected["w5"] = first + 180_000
    for position, rid in enumerate(waiters, start=1):
        before = await redis_ms(redis)
        admission = await budget.acquire("m", limits, rid, "bob", 1)
        after = await redis_ms(redis)
        assert admission.position == position
        assert expected[rid] - after - 1 <= admission.wait_ms <= expected[rid] - before + 1, rid
    # Asked again later, the deepest estimate has counted down by the time that passed.
    earlier = await budget.acquire("m", limits, "w5", "bob", 1)
    await asyncio.sleep(0.5)  # the time the estimate must count down by
    later = await budget.acquire("m", limits, "w5", "bob", 1)
    assert earlier.wait_ms - 700 <= later.wait_ms <= earlier.wait_ms - 450

    # Tokens per minute: the places free as the tokens that held them leave.
    tokens = BudgetLimits(requests_per_minute=None, tokens_per_minute=300)
    assert (await budget.acquire("t", tokens, "a", "ann", 100)).admitted
    await asyncio.sleep(0.2)  # a and b enter the window at two distinct moments
    assert (await budget.acquire("t", tokens, "b", "ann", 200)).admitted
    a_at, b_at = await counted_from(redis, budget, "t", "a"), await counted_from(redis, budget, "t", "b")
    for rid in ("x1", "x2"):
        assert not (await budget.acquire("t", tokens, rid, "cy", 100)).admitted
    now = await redis_ms(redis)
    x1, x2 = await budget.acquire("t", tokens, "x1", "cy", 100), await budget.acquire("t", tokens, "x2", "cy", 100)
    assert abs(x1.wait_ms - (a_at + 60_000 - now)) <= 50, "a's 100 tokens make room for x1"
    assert abs(x2.wait_ms - (b_at + 60_000 - now)) <= 50, "then b's 200 for x2 (x1 holds 100 by then)"


async def test_whoever_asks_admits_every_head_of_the_queue_that_fits(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=60)
    limits = BudgetLimits(requests_per_minute=3, tokens_per_minute=None)
    for rid in ("a", "b", "c"):
        assert (await budget.acquire("m", limits, rid, "ann", 1)).admitted
    for rid in ("w1", "w2", "w3", "w4"):
        assert not (await budget.acquire("m", limits, rid, "bob", 1)).admitted
    await budget.release("m", "a")
    await budget.release("m", "b")
    # The last in line asks: the two at the head get the two free places, in turn.
    assert (await budget.acquire("m", limits, "w4", "bob", 1, estimate=False)) == Admission(False, 0, 0)
    assert (await budget.state("m")).requests == 3
    assert (await budget.acquire("m", limits, "w1", "bob", 1)).admitted
    assert (await budget.acquire("m", limits, "w2", "bob", 1)).admitted
    assert (await budget.acquire("m", limits, "w3", "bob", 1)).position == 1
    # A place given while its waiter was giving up goes back: it never reached the provider.
    await budget.release("m", "c")
    assert not (await budget.acquire("m", limits, "w4", "bob", 1)).admitted
    await budget.leave("m", "w3")
    assert (await budget.state("m")).requests == 2
    assert (await budget.acquire("m", limits, "w4", "bob", 1)).admitted


async def test_every_request_sent_counts_until_its_window_passes_and_only_unsent_ones_go_back(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=60)
    limits = BudgetLimits(requests_per_minute=4, tokens_per_minute=None)
    # The orchestrator reserves each turn's place; "sent" and "slow" reach the provider.
    for rid in ("sent", "slow", "never"):
        assert (await budget.acquire("m", limits, rid, "ann", 500)).admitted
    granted = await counted_from(redis, budget, "m", "sent")
    await asyncio.sleep(0.05)  # so that "sent" is sent a measurable time after its place was granted
    for rid in ("sent", "slow"):
        assert (await budget.acquire("m", limits, rid, "ann", 500, send_of=rid)).admitted
        assert await budget.sends("m", rid) == 1
    assert await counted_from(redis, budget, "m", "sent") > granted, "counted from when it was sent"
    await asyncio.sleep(0.05)  # so that "slow" is answered a measurable time after it was sent
    sent_at = await counted_from(redis, budget, "m", "slow")
    await budget.answered("m", "slow", 500)
    assert await counted_from(redis, budget, "m", "slow") > sent_at, "and then from when the provider answered"
    # The provider refused "sent" (a 429): its retry needs a place of its own, the last one.
    retry = send_entry("sent", await budget.sends("m", "sent"))
    assert retry == "sent#2"
    assert (await budget.acquire("m", limits, retry, "ann", 40, send_of="sent")).admitted
    assert await budget.sends("m", "sent") == 2
    # A connection refused never reached the provider: that request's place goes back.
    await budget.unsent("m", "sent", retry)
    assert await budget.sends("m", "sent") == 1 and (await budget.state("m")).requests == 3
    # The turns end: what reached the provider stays counted (with the tokens used, or the
    # prompt's of an answer cut off while the provider was slow), what never did goes back.
    assert await budget.settle("m", "sent", 120)
    assert await budget.settle("m", "slow", 40)
    assert await budget.settle("m", "never", 0)
    assert not await budget.settle("m", "never", 0), "settling again changes nothing"
    state = await budget.state("m")
    assert (state.requests, state.tokens) == (2, 160)


async def test_a_request_whose_place_slid_out_before_it_was_sent_takes_a_new_one(redis: Redis) -> None:
    budget = ProviderBudget(redis, "tb" + uuid.uuid4().hex[:10], window_s=1.0)
    limits = BudgetLimits(requests_per_minute=1, tokens_per_minute=None)
    assert (await budget.acquire("m", limits, "late", "ann", 300)).admitted
    await asyncio.sleep(1.1)  # the job waited for a worker longer than the window
    assert (await budget.acquire("m", limits, "other", "bob", 300)).admitted
    # The window is full again: sending now would be a second request within its minute.
    assert not (await budget.acquire("m", limits, "late", "ann", 300, send_of="late")).admitted
    assert await budget.sends("m", "late") == 0
    await budget.leave("m", "late")


async def test_a_users_running_turns_hold_their_worst_case_so_together_they_never_overspend(infra: Infra) -> None:
    namespace = "tb" + uuid.uuid4().hex[:10]
    plan = PlanLimits(monthly_tokens=550, monthly_cost_micros=None)
    # Forty holds at once over four connections.
    clients = [Redis.from_url(infra.redis_url) for _ in range(4)]
    try:
        ledgers = [MonthlyUsage(client, namespace) for client in clients]
        held = await asyncio.gather(*(ledgers[i % 4].hold("ann", f"r{i}", 100, 0, plan) for i in range(40)))
        admitted = [f"r{i}" for i, got in enumerate(held) if got.held]
        assert len(admitted) == 5, "five worst cases of 100 fit 550, never a sixth"
        usage = ledgers[0]
        spent, holding = await usage.state("ann")
        assert (spent.tokens, holding.tokens) == (0, 500)
        # Answers are charged what they used, and their holds go; failed ones give theirs back.
        for rid in admitted[:3]:
            assert await usage.charge(rid, "ann", 60, 0)
            assert not await usage.charge(rid, "ann", 60, 0), "charged once"
        for rid in admitted[3:]:
            await usage.release("ann", rid)
        spent, holding = await usage.state("ann")
        assert (spent.tokens, holding.tokens) == (180, 0)
        # A turn delivered again after it was charged holds nothing.
        assert (await usage.hold("ann", admitted[0], 100, 0, plan)).held
        assert (await usage.state("ann"))[1].tokens == 0
        # 370 left: three more, and a smaller worst case still fits beside them.
        assert all([(await usage.hold("ann", f"s{i}", 100, 0, plan)).held for i in range(3)])
        assert not (await usage.hold("ann", "s3", 100, 0, plan)).held
        assert (await usage.hold("ann", "s3", 70, 0, plan)).held
        # A hold may always shrink (the exact worst case below the gateway's estimate).
        assert await usage.charge("extra", "ann", 100, 0)
        assert (await usage.hold("ann", "s0", 90, 0, plan)).held
    finally:
        for client in clients:
            await client.aclose()


async def test_a_hold_nobody_settles_is_given_back_in_time(redis: Redis) -> None:
    usage = MonthlyUsage(redis, "tb" + uuid.uuid4().hex[:10], hold_ttl_s=1)
    budgets = UserBudgets(usage, {"small": PlanLimits(monthly_tokens=100)}, {}, "small")
    await budgets.hold("ann", "r1", 100, 0)
    with pytest.raises(RateLimited) as refused:
        await budgets.hold("ann", "r2", 1, 0)
    assert refused.value.code == "user_budget_exceeded" and "other answers" in refused.value.message
    assert refused.value.retry_after_s == 5
    assert (await budgets.status("ann")).tokens_remaining == 0
    await asyncio.sleep(1.1)  # r1's process died: nobody settles it
    assert (await budgets.status("ann")).tokens_remaining == 100
    await budgets.hold("ann", "r2", 100, 0)


async def test_a_turns_hold_writes_its_record_and_reads_its_cancel_flag_and_stays_exact_under_concurrency(
    infra: Infra,
) -> None:
    namespace = "tb" + uuid.uuid4().hex[:10]
    plan = {"small": PlanLimits(monthly_tokens=550), "open": PlanLimits()}
    clients = [Redis.from_url(infra.redis_url) for _ in range(4)]
    try:
        ledgers = [UserBudgets(MonthlyUsage(client, namespace), plan, {"bob": "open"}, "small") for client in clients]
        usage = ledgers[0].usage

        def record(user: str, rid: str, reserved: int = 0) -> ResponseRecord:
            fields: dict[str, str | int] = {"model": "m", "prompt_tokens": 7, "reserved": reserved, "cache_key": ""}
            return ResponseRecord(usage.record_key("job-record", user, rid), fields, 60)

        async def hold(i: int) -> bool:
            try:
                flag = await ledgers[i % 4].hold_unless(
                    f"{namespace}:cancelled:r{i}", "ann", f"r{i}", 100, 0, record=record("ann", f"r{i}")
                )
            except RateLimited:
                return False
            assert flag is None
            return True

        # Forty turns at once over four connections: exactly five worst cases of 100 fit 550, and
        # only the turns held have a record.
        held = await asyncio.gather(*(hold(i) for i in range(40)))
        admitted = [f"r{i}" for i, ok in enumerate(held) if ok]
        assert len(admitted) == 5
        for i in range(40):
            assert bool(await clients[0].exists(usage.record_key("job-record", "ann", f"r{i}"))) == held[i]
        # A cancelled turn is refused nothing: the caller ends it as cancelled.
        await clients[0].set(f"{namespace}:cancelled:late", "user")
        assert await ledgers[0].hold_unless(f"{namespace}:cancelled:late", "ann", "late", 100, 0) == b"user"
        # A plan without limits holds nothing but still writes the record.
        assert (
            await ledgers[1].hold_unless(f"{namespace}:cancelled:b1", "bob", "b1", 10**9, 0, record=record("bob", "b1"))
            is None
        )
        assert await clients[0].hget(usage.record_key("job-record", "bob", "b1"), "prompt_tokens") == b"7"
        # The completion charges once and takes the record with it, unless something still needs it.
        first, second = admitted[0], admitted[1]
        key = usage.record_key("job-record", "ann", first)
        assert await usage.settle(first, "ann", 60, 0, key, ("reserved",)) == (True, {
            b"model": b"m", b"prompt_tokens": b"7", b"reserved": b"0", b"cache_key": b""
        })  # fmt: skip
        assert await usage.settle(first, "ann", 60, 0, key, ("reserved",)) == (False, {}), "charged once"
        kept = record("ann", second, reserved=1)
        await usage.hold("ann", second, 100, 0, plan["small"], record=kept)
        charged, fields = await usage.settle(second, "ann", 0, 0, kept.key, ("reserved",))
        assert not charged and fields[b"reserved"] == b"1" and await clients[0].exists(kept.key)
        spent, holding = await usage.state("ann")
        assert (spent.tokens, holding.tokens) == (60, 300), "one charged, one given back, three still held"
    finally:
        for client in clients:
            await client.aclose()
