"""Provider budgets, monthly user limits, routing, token counts and the response cache, through
the whole system: the five services as processes, with tiny budgets, and the fake provider
server as a real HTTP process whose request log shows every call a provider received."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BucketState, ProviderBudget
from parley_common.context.prompt import DEFAULT_SYSTEM_PROMPT
from parley_common.context.tokens import counter_for
from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, cache_entries, provider_calls, stored_messages
from tests.support.models import demo_model, model
from tests.support.polling import eventually
from tests.support.sse import Frame, frames, read_all, text_of
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_budgets_" + secrets.token_urlsafe(12)
CAROL_KEY = "pk_test_carol_" + secrets.token_urlsafe(12)
MAX_WAIT_S = 4
TINY_TOKENS = 2100


def registry(fake_url: str) -> dict[str, Any]:
    def fake_model(upstream: str, **extra: Any) -> dict[str, Any]:
        options = {"context_window": 16_000, "max_output_tokens": 2000, **extra}
        return model("openai", upstream, input_price_per_mtok=2.0, output_price_per_mtok=10.0, **options)

    return {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}, "openai": {"kind": "openai", "base_url": f"{fake_url}/v1"}},
        "models": {
            "demo": demo_model(),
            "fake": fake_model("fake-test"),
            "fake-mini": fake_model("mini-test"),
            # One request at a time: each reserves its prompt and 2,000 output tokens.
            "tight": fake_model("tight-test", tokens_per_minute=2600),
            "blocked": fake_model("blocked-test", requests_per_minute=1),
            # Room for the system prompt and a few short turns, 100 tokens kept for the answer.
            "narrow": fake_model("narrow-test", context_window=300, max_output_tokens=100),
            # A limited model that falls back to one with a single request a minute.
            "busy": fake_model("busy-test", requests_per_minute=100, fallbacks=["spare"]),
            "spare": fake_model("spare-test", requests_per_minute=1),
        },
        "routing": {"simple": "fake-mini", "strong": "demo", "simple_max_chars": 80, "simple_max_history": 2},
        "images": {"price_per_image": 0.04},
    }


@pytest.fixture(scope="module")
async def bstack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {
        "PARLEY_WORKER_PROVIDERS": '["demo", "openai"]',
        "PARLEY_PROVIDER_API_KEYS": json.dumps({"openai": "sk-test-openai"}),
        "PARLEY_API_KEYS": json.dumps({"carol": CAROL_KEY}),
        # Room for one turn on "fake" (its prompt and 2,000 tokens of answer), not two.
        "PARLEY_PLANS": json.dumps(
            {
                "default": {"monthly_tokens": 10_000_000},
                "tiny": {"monthly_tokens": TINY_TOKENS, "monthly_cost_micros": 50_000},
            }
        ),
        "PARLEY_USER_PLANS": json.dumps({"carol": "tiny"}),
        "PARLEY_BUDGET_MAX_WAIT_S": str(MAX_WAIT_S),
        "PARLEY_BUDGET_POLL_S": "0.05",
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "20",
        "PARLEY_DEMO_TOKENS_PER_S": "200",
        "PARLEY_HEARTBEAT_S": "1",
    }
    config = stack_config(infra, tmp_path_factory.mktemp("budget-stack"), "tq", KEY, env, registry(fake))
    async with own_stack(config) as stack:
        yield stack


def client_for(stack: Stack, key: str) -> httpx.AsyncClient:
    return api_client(stack.base_url, key)


@pytest.fixture
async def api(bstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(bstack, KEY) as client:
        yield client


async def new_conversation(api: httpx.AsyncClient) -> str:
    reply = await api.post("/v1/conversations", json={})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def turn(
    api: httpx.AsyncClient, content: str, model: str | None = None, on_frame: asyncio.Event | None = None
) -> list[Frame]:
    conversation = await new_conversation(api)
    body: dict[str, Any] = {"content": content, **({"model": model} if model else {})}
    got: list[Frame] = []
    async with api.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for frame in frames(r):
            got.append(frame)
            if on_frame is not None:
                on_frame.set()
            if frame.event in ("done", "error"):
                break
    return got


async def test_requests_over_the_provider_budget_wait_in_line_and_complete_once_it_frees(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    first_started = asyncio.Event()
    # About a second of streaming, while the others find the budget taken.
    first = asyncio.create_task(
        turn(api, 'slow one [[fake {"tokens": 20, "tokens_per_s": 20}]]', "tight", first_started)
    )
    await first_started.wait()
    second_queued = asyncio.Event()
    # Half a second: the third waits behind it at the head of the queue.
    second = asyncio.create_task(
        turn(api, 'second one [[fake {"tokens": 10, "tokens_per_s": 20}]]', "tight", second_queued)
    )
    await second_queued.wait()
    third = await turn(api, "third one", "tight")
    first_frames, second_frames = await first, await second

    assert first_frames[0].event == "meta" and first_frames[-1].event == "done"
    queued = [f for f in second_frames if f.event == "queued"]
    assert second_frames[0].event == "queued" and queued[0].data["position"] == 1
    assert "estimated_wait_ms" in queued[0].data
    third_positions = [f.data["position"] for f in third if f.event == "queued"]
    assert third_positions[0] == 2 and third_positions[-1] == 1, "the position is updated as it moves"
    for got in (second_frames, third):
        assert got[-1].event == "done" and text_of(got)
        kinds = [f.event for f in got]
        assert kinds.index("meta") > max(i for i, k in enumerate(kinds) if k == "queued")
    # The provider got them one after the other, in order.
    calls = await provider_calls(seen)
    assert [c["body"]["messages"][-1]["content"].split()[0] for c in calls] == ["slow", "second", "third"]


async def test_a_request_that_waits_too_long_gets_a_clear_retryable_error(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    done = await turn(api, "the only one this minute", "blocked")
    assert done[-1].event == "done"
    started = time.monotonic()
    waited = await turn(api, "one too many", "blocked")
    assert waited[0].event == "queued" and waited[-1].event == "error"
    assert waited[-1].data["code"] == "provider_budget_timeout" and waited[-1].data["retryable"] is True
    assert time.monotonic() - started >= MAX_WAIT_S - 0.5
    assert len(await provider_calls(seen)) == 1, "the request that timed out never reached the provider"


async def test_a_user_whose_budget_cannot_cover_a_turn_gets_429_and_the_provider_no_call(
    bstack: Stack, api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    async with client_for(bstack, CAROL_KEY) as carol:
        first = await turn(carol, 'my one question this month [[fake {"tokens": 100}]]', "fake")
        assert first[-1].event == "done"
        used = sum(next(f for f in first if f.event == "usage").data[k] for k in ("input_tokens", "output_tokens"))

        # Usage is charged when the answer completes: wait until it shows.
        async def charged() -> bool:
            return (await carol.get("/v1/models")).headers["x-budget-tokens-remaining"] == str(TINY_TOKENS - used)

        await eventually(charged, 15, f"usage charged ({TINY_TOKENS - used} left)")
        calls_before = len(await provider_calls(seen))
        conversation = await new_conversation(carol)
        # What is left no longer covers a turn's worst case: its prompt and 2,000 tokens of answer.
        refused = await carol.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "one more?", "model": "fake"}
        )
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "user_budget_exceeded" and "resets at" in error["message"]
        assert f"the {TINY_TOKENS - used} left" in error["message"] and "max_output_tokens" in error["message"]
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["x-budget-tokens-remaining"] == str(TINY_TOKENS - used)
        assert refused.headers["x-budget-plan"] == "tiny"
        openai_style = await carol.post(
            "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "and now?"}]}
        )
        assert openai_style.status_code == 429
        # Two pictures cost 80,000 micro-dollars, more than what is left of her 50,000.
        picture = await carol.post("/v1/images/generations", json={"prompt": "a cat on a mat", "n": 2})
        assert picture.status_code == 429 and picture.json()["error"]["code"] == "user_budget_exceeded"
        assert "micro-dollars" in picture.json()["error"]["message"]
        # Nothing marks a call that never happens: a refused request that leaked through would
        # reach the fake provider within this time.
        await asyncio.sleep(0.3)
        assert len(await provider_calls(seen)) == calls_before, "nothing reached a provider"
        stored = (await carol.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
        assert stored == [], "nothing was stored either"
    # Other users are not affected, and see their own budget.
    models = await api.get("/v1/models")
    assert int(models.headers["x-budget-tokens-remaining"]) > 0 and models.headers["x-budget-plan"] == "default"


async def test_a_model_is_picked_by_the_query_when_none_is_named(api: httpx.AsyncClient) -> None:
    simple = await turn(api, "What is the capital of France?")
    assert simple[0].data["model"] == "fake-mini" and simple[-1].event == "done"
    code = await turn(api, "Why does this fail?\n```python\nprint(1/0)\n```")
    assert code[0].data["model"] == "demo" and code[-1].event == "done"
    pinned = await turn(api, "What is the capital of Spain?", "fake")
    assert pinned[0].data["model"] == "fake"


async def test_token_counts_before_sending_match_the_assembled_context(api: httpx.AsyncClient) -> None:
    conversation = await new_conversation(api)
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": "hello there", "model": "demo"}
    ) as r:
        answer = text_of(await read_all(r))
    await stored_messages(api, conversation, 2)
    reply = await api.post(
        "/v1/tokens/count", json={"conversation_id": conversation, "content": "and what next?", "model": "demo"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    counter = counter_for("demo", "cl100k_base")
    expected = counter.prompt(
        [
            chat_pb2.PromptMessage(role="system", content=DEFAULT_SYSTEM_PROMPT),
            chat_pb2.PromptMessage(role="user", content="hello there"),
            chat_pb2.PromptMessage(role="assistant", content=answer),
            chat_pb2.PromptMessage(role="user", content="and what next?"),
        ]
    )
    assert body["input_tokens"] == expected and body["estimated"] is False
    assert (body["model"], body["max_output_tokens"], body["dropped_messages"]) == ("demo", 1024, 0)
    assert body["cost_estimate_micros"] == 0
    priced = (await api.post("/v1/tokens/count", json={"content": "What is 2+2?", "max_output_tokens": 100})).json()
    assert priced["model"] == "fake-mini", "routed as the message would be"
    assert priced["input_cost_micros"] == round(priced["input_tokens"] * 2.0)
    assert priced["cost_estimate_micros"] == round(priced["input_tokens"] * 2.0 + 100 * 10.0)
    missing = await api.post("/v1/tokens/count", json={"conversation_id": "nope", "content": "hi"})
    assert missing.status_code == 404


async def test_a_long_conversation_is_trimmed_to_the_window_newest_turns_kept(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation = await new_conversation(api)
    for i in range(6):
        content = f"Turn {i}: " + "tell me more about budgets and windows " * 3
        async with api.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": "narrow"}
        ) as r:
            assert (await read_all(r))[-1].event == "done"
    draft = {"conversation_id": conversation, "content": "Turn 6: and the last one?", "model": "narrow"}
    counted = (await api.post("/v1/tokens/count", json=draft)).json()
    assert counted["dropped_messages"] > 0 and counted["input_tokens"] <= 300 - 100
    calls = await provider_calls(seen)
    last = calls[-1]["body"]["messages"]
    assert len(last) < 1 + 2 * 5 + 1, "older turns were left out"
    assert last[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, "the system prompt is always kept"
    assert last[-1]["content"].startswith("Turn 5:") and last[1]["role"] == "user", "the newest turns, whole"
    assert calls[-1]["body"]["max_tokens"] == 100
    # The provider's own count of the prompt stays within the window too.
    assert calls[-1]["input_tokens"] + 100 <= 300


async def test_a_deterministic_request_is_answered_from_the_cache_without_a_provider_call(
    bstack: Stack, api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    body = {
        "model": "fake",
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "cache me " + uuid.uuid4().hex},
        ],
    }
    before = await cache_entries(bstack)
    first = await api.post("/v1/chat/completions", json=body)
    assert first.status_code == 200, first.text
    assert len(await provider_calls(seen)) == 1

    async def filled() -> bool:  # when the answer's completion is processed
        return await cache_entries(bstack) > before

    await eventually(filled, 10, "an answer in the cache")

    second = await api.post("/v1/chat/completions", json=body)
    assert second.status_code == 200, second.text
    content = first.json()["choices"][0]["message"]["content"]
    assert second.json()["choices"][0]["message"]["content"] == content
    assert second.json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert len(await provider_calls(seen)) == 1, "the cache hit made no provider call"
    # It was still streamed, frame by frame, like any answer.
    response_id = "r_" + second.json()["id"].removeprefix("chatcmpl-")
    async with api.stream("GET", f"/v1/responses/{response_id}/events") as r:
        replayed = await read_all(r)
    assert [f.event for f in replayed] == ["meta", "delta", "usage", "done"]
    assert replayed[0].data["cached"] is True and replayed[2].data["cost_micros"] == 0

    async with api.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        streamed = text_of([frame async for frame in frames(r)])
    assert streamed == content and len(await provider_calls(seen)) == 1

    creative = await api.post("/v1/chat/completions", json={**body, "temperature": 0.7})
    assert creative.status_code == 200
    assert len(await provider_calls(seen)) == 2, "only temperature 0 is served from the cache"


async def test_a_fallback_model_is_budgeted_like_a_first_choice(
    bstack: Stack, api: httpx.AsyncClient, seen: httpx.AsyncClient, infra: Infra
) -> None:
    redis = Redis.from_url(infra.redis_url)
    budget = ProviderBudget(redis, bstack.config.namespace)
    try:
        key = uuid.uuid4().hex[:8]
        first = await turn(api, f'overloaded [[fake {{"status": 529, "times": 1, "key": "{key}a"}}]]', "busy")
        assert first[-1].event == "done", first[-1]
        meta = next(f for f in first if f.event == "meta")
        assert (meta.data["model"], meta.data["fallback_from"]) == ("spare", "busy")
        usage = next(f for f in first if f.event == "usage").data
        # The answer's usage is counted against the model that gave it (once its completion is
        # settled, after the stream ends); the model that was overloaded keeps nothing reserved.
        used = usage["input_tokens"] + usage["output_tokens"]

        async def counted() -> BucketState | None:
            spare = await budget.state("spare")
            return spare if spare.tokens == used else None

        spare = await eventually(counted, 10, f"{used} tokens in the spare model's budget")
        assert spare.requests == 1
        # The overloaded provider got the request and counted it: it keeps its place, with its
        # prompt's tokens (the answer's reserve went back).
        busy = await budget.state("busy")
        assert busy.requests == 1 and 0 < busy.tokens < 2000
        # The spare model's one request a minute is used: the next fallback waits in line for
        # it (the client is told), and gives up after the maximum wait without calling it.
        calls_before = len(await provider_calls(seen))
        second = await turn(api, f'again [[fake {{"status": 529, "times": 1, "key": "{key}b"}}]]', "busy")
        assert "queued" in [f.event for f in second]
        assert second[-1].event == "error" and second[-1].data["code"] == "provider_budget_timeout"
        calls = (await provider_calls(seen))[calls_before:]
        assert [c["model"] for c in calls] == ["busy-test"], "the spare model was not called over its budget"
    finally:
        await redis.aclose()
