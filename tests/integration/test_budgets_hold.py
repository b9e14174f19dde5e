"""Budgets that hold where the money is spent, through the whole system with two gateways and
two orchestrators on one namespace (as replicas run), and the fake provider server whose own
request log shows what a provider receives:

- a user's concurrent turns never spend more of the monthly plan than it has;
- a provider never receives more requests in a minute than its limit, whatever is cancelled,
  refused with a 429, retried or answered with nothing;
- a turn queued longer than the gateway's idle timeout keeps its stream;
- a burst several windows deep completes under the default settings, its estimates counting down.

The budget settings are the defaults (PARLEY_BUDGET_MAX_WAIT_S and PARLEY_STREAM_IDLE_TIMEOUT_S
included); the burst and the 68-second wait take as long as the limits make them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BudgetLimits, ProviderBudget
from parley_common.budgets.users import MonthlyUsage
from parley_common.context.prompt import DEFAULT_SYSTEM_PROMPT
from parley_common.context.window import counter_for_model
from parley_common.models import ModelRegistry
from parley_dev.infra import Infra, free_port
from parley_dev.stack import Stack
from tests.support.api import provider_calls
from tests.support.models import model
from tests.support.polling import eventually
from tests.support.sse import Frame, frames
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_hold_" + secrets.token_urlsafe(12)
DANA_KEY = "pk_test_dana_" + secrets.token_urlsafe(12)
BURST_KEY = "pk_test_burst_" + secrets.token_urlsafe(12)
RACE_TEXT = "How many turns does my plan still cover?"
RACE_OUTPUT_TOKENS = 40
BURST = 120
BURST_RPM = 30
FAULTY_RPM = 3


def registry(fake_url: str) -> dict[str, Any]:
    return {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}, "openai": {"kind": "openai", "base_url": f"{fake_url}/v1"}},
        "models": {
            "demo": model("demo", "parley-demo-1"),
            "slow": model("demo", "parley-demo-1", requests_per_minute=1),
            "faulty": model("openai", "faulty-test", requests_per_minute=FAULTY_RPM),
            "burst": model("openai", "burst-test", requests_per_minute=BURST_RPM),
        },
    }


def race_worst_case(models: dict[str, Any]) -> int:
    """What one of Dana's turns may use at most: its prompt and its answer's cap."""
    counter = counter_for_model(ModelRegistry.model_validate(models), "demo")
    prompt = [
        chat_pb2.PromptMessage(role="system", content=DEFAULT_SYSTEM_PROMPT),
        chat_pb2.PromptMessage(role="user", content=RACE_TEXT),
    ]
    return counter.prompt(prompt) + RACE_OUTPUT_TOKENS


@dataclass
class Stacks:
    stack: Stack
    gateways: list[str]
    plan_tokens: int


@pytest.fixture(scope="module")
async def hstack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stacks]:
    models = registry(fake)
    # Five of Dana's turns fit, and half of a sixth.
    plan_tokens = 5 * race_worst_case(models) + race_worst_case(models) // 2
    env = {
        "PARLEY_WORKER_PROVIDERS": '["demo", "openai"]',
        "PARLEY_PROVIDER_API_KEYS": json.dumps({"openai": "sk-test-openai"}),
        "PARLEY_API_KEYS": json.dumps({"dana": DANA_KEY, "burst": BURST_KEY}),
        "PARLEY_PLANS": json.dumps({"default": {}, "five": {"monthly_tokens": plan_tokens}}),
        "PARLEY_USER_PLANS": json.dumps({"dana": "five"}),
        # One client sends the whole burst (the budget settings stay the defaults).
        "PARLEY_MAX_STREAMS_PER_USER": str(BURST + 10),
        "PARLEY_REQUESTS_PER_MINUTE": "100000",
        # Dana's 40 turns are all admitted or refused long before the first answer ends and is
        # charged (its unused estimate freed could admit a sixth): at 20 ms, a busy machine (CI's
        # two pytest workers) once took longer than an answer to decide all 40.
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "4000",
        "PARLEY_DEMO_TOKENS_PER_S": "400",
    }
    config = stack_config(infra, tmp_path_factory.mktemp("hold-stack"), "th", KEY, env, models)
    second = free_port()
    async with own_stack(config) as stack:
        stack.start_service("gateway", port=second)
        stack.start_service("orchestrator", replica="b")
        await stack.wait_ready(gateway_url=f"http://127.0.0.1:{second}")
        yield Stacks(stack, [stack.base_url, f"http://127.0.0.1:{second}"], plan_tokens)


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


def clients(stacks: Stacks, key: str) -> list[httpx.AsyncClient]:
    """One client per gateway, for the same user."""
    limits = httpx.Limits(max_connections=BURST + 10)
    return [
        httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=600, limits=limits)
        for url in stacks.gateways
    ]


async def new_conversation(api: httpx.AsyncClient) -> str:
    reply = await api.post("/v1/conversations", json={})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


@dataclass
class Seen:
    """One turn as its client saw it: the HTTP status (and body when refused), and each frame
    with when it arrived."""

    status: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    response_id: str = ""
    frames: list[tuple[float, Frame]] = field(default_factory=list)
    events: dict[str, asyncio.Event] = field(default_factory=dict)

    def kinds(self) -> list[str]:
        return [f.event for _, f in self.frames]

    def last(self) -> Frame:
        return self.frames[-1][1]

    def first_at(self, kind: str) -> float:
        return next(at for at, f in self.frames if f.event == kind)

    def event(self, kind: str) -> asyncio.Event:
        return self.events.setdefault(kind, asyncio.Event())


async def send(api: httpx.AsyncClient, conversation: str, body: dict[str, Any], seen: Seen) -> Seen:
    async with api.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as reply:
        seen.status = reply.status_code
        if reply.status_code != 200:
            seen.body = json.loads(await reply.aread())
            return seen
        seen.response_id = reply.headers["x-parley-response-id"]
        async for frame in frames(reply):
            seen.frames.append((time.monotonic(), frame))
            seen.event(frame.event).set()
            if frame.event in ("done", "error"):
                break
    return seen


def most_in_a_minute(times: list[float]) -> int:
    """The most of `times` (seconds) within any 60-second window."""
    ordered = sorted(times)
    return max((sum(1 for t in ordered if start <= t < start + 60) for start in ordered), default=0)


async def test_concurrent_turns_through_two_gateways_and_two_orchestrators_never_overspend_a_plan(
    hstack: Stacks, redis: Redis
) -> None:
    dana = clients(hstack, DANA_KEY)
    try:
        conversations = [await new_conversation(dana[i % 2]) for i in range(40)]
        body = {"content": RACE_TEXT, "model": "demo", "max_output_tokens": RACE_OUTPUT_TOKENS}
        turns = await asyncio.gather(
            *(send(dana[i % 2], conversation, body, Seen()) for i, conversation in enumerate(conversations))
        )
    finally:
        for client in dana:
            await client.aclose()
    answered = [t for t in turns if t.status == 200 and t.last().event == "done"]
    refused = [t for t in turns if t.status == 429]
    # The plan covers five worst cases: five are answered, the other 35 refused before anything
    # was spent (each would have been admitted while any budget was left, and charged after).
    assert len(answered) == 5, [t.kinds() or t.body for t in turns]
    assert len(refused) == 35 and all(t.body["error"]["code"] == "user_budget_exceeded" for t in refused)
    used = 0
    for t in answered:
        usage = next(f for _, f in t.frames if f.event == "usage").data
        used += usage["input_tokens"] + usage["output_tokens"]
    ledger = MonthlyUsage(redis, hstack.stack.config.namespace)

    async def settled() -> bool:
        spent, held = await ledger.state("dana")
        return spent.tokens == used and held.tokens == 0

    await eventually(settled, 15, "the answers were never charged")
    assert used <= hstack.plan_tokens, "the charge ends within the plan"


async def test_the_provider_never_gets_more_than_its_limit_whatever_is_cancelled_refused_or_retried(
    hstack: Stacks, seen: httpx.AsyncClient, redis: Redis
) -> None:
    api = clients(hstack, KEY)
    key = uuid.uuid4().hex[:8]
    turns = {name: Seen() for name in ("slow", "refused", "empty", "later1", "later2")}
    contents = {
        # The provider takes its time: the client cancels while it waits for the first token.
        "slow": 'take your time [[fake {"first_token_delay": 30}]]',
        # Answered 429 once (try again in 0.2 s, says retry-after), then fine: the retry is a request too.
        "refused": f'refused once [[fake {{"status": 429, "retry_after": 0.2, "times": 1, "key": "{key}"}}]]',
        # An empty answer, no usage reported: the provider counted the request all the same.
        "empty": '[[fake {"tokens": 0, "no_usage": true}]] nothing',
        "later1": "a normal question",
        "later2": "another normal question",
    }
    tasks: dict[str, asyncio.Task[Seen]] = {}
    try:

        async def start(name: str, gateway: int) -> None:
            conversation = await new_conversation(api[gateway])
            body = {"content": contents[name], "model": "faulty"}
            tasks[name] = asyncio.create_task(send(api[gateway], conversation, body, turns[name]))

        for i, name in enumerate(("slow", "refused", "empty")):
            await start(name, i % 2)

        async def three_sent() -> bool:
            return len(await provider_calls(seen)) >= FAULTY_RPM

        await eventually(three_sent, 20, "the first three requests never reached the provider")
        await start("later1", 0)
        await start("later2", 1)
        # The provider has the slow one's request (it is in its log) and takes its time.
        cancelled = await api[1].post(f"/v1/responses/{turns['slow'].response_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert (await asyncio.wait_for(tasks["slow"], 20)).last().data["finish_reason"] == "cancelled"
        empty = await asyncio.wait_for(tasks["empty"], 20)
        assert empty.last().event == "done"
        # The retry and the two later turns wait for places in the provider's minute.
        for name in ("refused", "later1", "later2"):
            await asyncio.wait_for(turns[name].event("queued").wait(), 20)
        assert "meta" not in turns["refused"].kinds(), "the retry was not sent"
        await asyncio.sleep(2)  # and stay waiting, while nothing else reaches the provider
        calls = await provider_calls(seen)
        assert len(calls) == FAULTY_RPM, [c["body"]["messages"][-1]["content"][:40] for c in calls]
        state = await ProviderBudget(redis, hstack.stack.config.namespace).state("faulty")
        assert state.requests == FAULTY_RPM, "each request the provider counted holds its place"
        for name in ("refused", "later1", "later2"):
            await api[0].post(f"/v1/responses/{turns[name].response_id}/cancel")
        for name in ("refused", "later1", "later2"):
            ended = await asyncio.wait_for(tasks[name], 20)
            assert ended.last().event == "done" and ended.last().data["finish_reason"] == "cancelled"
        assert len(await provider_calls(seen)) == FAULTY_RPM
    finally:
        for task in tasks.values():
            task.cancel()
        for client in api:
            await client.aclose()


async def test_a_turn_queued_longer_than_the_idle_timeout_keeps_its_stream_and_completes(
    hstack: Stacks, redis: Redis
) -> None:
    # One request a minute, and the minute's place taken 52 s ago (by another replica's turn):
    # the first turn waits 8 s for it, the second 68 s, past the gateway's 60 s idle timeout.
    budget = ProviderBudget(redis, hstack.stack.config.namespace)
    limits = BudgetLimits(requests_per_minute=1, tokens_per_minute=None)
    assert (await budget.acquire("slow", limits, "r_earlier", "someone", 10)).admitted
    seconds, micros = await redis.time()
    await redis.zadd(budget.keys("slow")[0], {"r_earlier": int(seconds) * 1000 + int(micros) // 1000 - 52_000})
    api = clients(hstack, KEY)
    try:
        first, second = Seen(), Seen()
        body = {"content": "worth the wait?", "model": "slow"}
        waiting = asyncio.create_task(send(api[0], await new_conversation(api[0]), body, first))
        await asyncio.wait_for(first.event("queued").wait(), 20)
        started = time.monotonic()
        await send(api[1], await new_conversation(api[1]), {**body, "content": "and me?"}, second)
        await waiting
    finally:
        for client in api:
            await client.aclose()
    assert first.last().event == "done" and second.last().event == "done", second.kinds()
    assert second.first_at("meta") - started >= 62, "it did wait its turn, longer than the idle timeout"
    queued = [(at, f.data) for at, f in second.frames if f.event == "queued"]
    assert queued[0][1]["position"] == 2 and queued[-1][1]["position"] == 1
    # The queue refreshed its frame while it waited, counting the wait down.
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(queued)]
    assert max(gaps) < 30 and second.first_at("meta") - queued[-1][0] < 30
    waits = [data["estimated_wait_ms"] for _, data in queued]
    assert all(b < a for a, b in itertools.pairwise(waits)), waits


async def test_a_burst_four_windows_deep_completes_under_the_defaults_and_the_provider_never_sees_more(
    hstack: Stacks, seen: httpx.AsyncClient
) -> None:
    api = clients(hstack, BURST_KEY)
    try:
        conversations = [await new_conversation(api[i % 2]) for i in range(BURST)]
        # The budget's windows run on Redis's clock (TIME, the wall clock): measured on it, so
        # that a step of the machine's clock moves both alike.
        started = time.time()
        turns = await asyncio.gather(
            *(
                send(api[i % 2], conversation, {"content": f"burst question {i}", "model": "burst"}, Seen())
                for i, conversation in enumerate(conversations)
            )
        )
    finally:
        for client in api:
            await client.aclose()
    failed = [t.last().data for t in turns if t.status != 200 or t.last().event != "done"]
    assert not failed, failed[:3]
    assert time.time() - started >= 170, "four windows of thirty"
    calls = [c for c in await provider_calls(seen) if c["model"] == "burst-test"]
    assert len(calls) == BURST
    assert most_in_a_minute([c["seen_at"] for c in calls]) == BURST_RPM, "never more than its limit a minute"
    # Every queued frame's estimate, against when the turn really started (its meta frame).
    errors, relative = [], []
    for t in turns:
        queued = [(at, f.data["estimated_wait_ms"] / 1000) for at, f in t.frames if f.event == "queued"]
        waits = [estimate for _, estimate in queued]
        # Counting down: a wait never more than a second above the one before, and lower in the end.
        assert all(b < a + 1 for a, b in itertools.pairwise(waits)), ("counts down", waits)
        assert len(waits) < 2 or waits[-1] < waits[0], ("counts down", waits)
        shown = [(f.data["position"], f.data["estimated_wait_ms"]) for _, f in t.frames if f.event == "queued"]
        assert all(a != b for a, b in itertools.pairwise(shown)), "no frame repeats the one before"
        for at, estimate in queued:
            actual = t.first_at("meta") - at
            errors.append(estimate - actual)
            relative.append(abs(estimate - actual) / max(actual, 1.0))
    assert len(errors) >= 90 * 3, "the ninety queued turns were told their wait again and again"
    relative.sort()
    p90 = relative[int(len(relative) * 0.9)]
    assert p90 <= 0.10, f"estimates off by {p90:.0%} at p90"
