"""Real provider wire formats through the whole system, against the fake provider server
running as a real HTTP process: every format, every failure mode, cancellation.

The fake is steered per request by a directive in the message (see parley_dev.fake_providers).
"""

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

from parley_common.context.tokens import counter_for
from parley_dev.fake_providers import answer_tokens
from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, cache_entries, provider_calls
from tests.support.polling import eventually
from tests.support.sse import Frame, frames, parse, read_all, text_of
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_providers_" + secrets.token_urlsafe(12)
PRICES = {"input_price_per_mtok": 2.0, "output_price_per_mtok": 10.0}


def registry(fake_url: str) -> dict[str, Any]:
    def model(provider: str, upstream: str, fallbacks: list[str] | None = None) -> dict[str, Any]:
        return {
            "provider": provider,
            "upstream_model": upstream,
            "context_window": 100_000,
            "max_output_tokens": 4000,
            **PRICES,
            "fallbacks": fallbacks or [],
        }

    return {
        "default_model": "demo",
        "providers": {
            "demo": {"kind": "demo"},
            "openai": {"kind": "openai", "base_url": f"{fake_url}/v1"},
            "anthropic": {"kind": "anthropic", "base_url": fake_url},
            "gemini": {"kind": "gemini", "base_url": fake_url},
            "local": {"kind": "openai", "base_url": f"{fake_url}/v1"},
            # Nothing listens at the provider's own address: its model says where it is served.
            "cluster": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        },
        "models": {
            "demo": {**model("demo", "parley-demo-1"), "input_price_per_mtok": 0, "output_price_per_mtok": 0},
            "gpt": model("openai", "gpt-test", ["claude"]),
            "claude": model("anthropic", "claude-test"),
            "gemini": model("gemini", "gemini-test"),
            "gemini-fb": model("gemini", "gemini-test", ["claude"]),
            # Like OpenAI's reasoning models: no temperature field, the output limit in the new one.
            "reasoner": {
                **model("openai", "reasoner-test"),
                "accepts_temperature": False,
                "max_tokens_field": "max_completion_tokens",
            },
            "local": model("local", "llama-test"),
            "vllm": {**model("cluster", "qwen-test"), "base_url": f"{fake_url}/v1"},
        },
    }


@pytest.fixture(scope="module")
async def pstack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = stack_config(
        infra,
        tmp_path_factory.mktemp("provider-stack"),
        "tp",
        KEY,
        {
            "PARLEY_WORKER_PROVIDERS": '["demo", "openai", "anthropic", "gemini", "local", "cluster"]',
            "PARLEY_PROVIDER_API_KEYS": json.dumps(
                {"openai": "sk-test-openai", "anthropic": "sk-ant-test", "gemini": "g-test-key"}
            ),
            "PARLEY_PROVIDER_RETRY_BASE_S": "0.05",
            "PARLEY_PROVIDER_FIRST_TOKEN_TIMEOUT_S": "1.5",
            "PARLEY_PROVIDER_IDLE_TIMEOUT_S": "1.5",
            "PARLEY_HEARTBEAT_S": "1",
            # One SSE event per provider token, so tests can count them.
            "PARLEY_COALESCE_MS": "0",
            "PARLEY_WORKER_COALESCE_MS": "0",
        },
        registry=registry(fake),
    )
    async with own_stack(config) as stack:
        yield stack


@pytest.fixture
async def api(pstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(pstack.base_url, KEY) as client:
        yield client


async def turn(api: httpx.AsyncClient, model: str, content: str) -> tuple[str, str, list[Frame]]:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": model}
    ) as r:
        assert r.status_code == 200, await r.aread()
        return conversation, r.headers["x-parley-response-id"], await read_all(r)


async def stored_answer(api: httpx.AsyncClient, conversation: str, response_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        data = (await api.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
        return next((m for m in data if m["id"] == response_id), None)

    return await eventually(found, 10, f"answer {response_id} in history")


async def one_more_cached(stack: Stack, before: int) -> None:
    """Until the response cache holds one answer more than `before`; then half a second more:
    nothing marks an answer left out of the cache, so an answer that completed before the
    cached one gets that long to show it was (wrongly) cached too."""

    async def filled() -> bool:
        return await cache_entries(stack) >= before + 1

    await eventually(filled, 10, "an answer in the cache")
    await asyncio.sleep(0.5)


@pytest.mark.parametrize(
    ("model", "fmt"), [("gpt", "openai"), ("claude", "anthropic"), ("gemini", "gemini"), ("local", "openai")]
)
async def test_each_wire_format_streams_the_providers_answer_with_its_usage(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, model: str, fmt: str
) -> None:
    conversation, response_id, got = await turn(api, model, f"Tell me about {model}")
    assert got[0].event == "meta" and got[-1].event == "done"
    assert got[0].data["model"] == model
    expected = "".join(answer_tokens(f"Tell me about {model}"))
    assert text_of(got) == expected
    assert sum(f.event == "delta" for f in got) > 3, "token by token"
    (request,) = await provider_calls(seen)
    assert request["format"] == fmt and request["model"] == {"local": "llama-test"}.get(model, f"{model}-test")
    assert request["auth"] is (model != "local"), "keys go where configured, nowhere else"
    usage = next(f.data for f in got if f.event == "usage")
    assert (usage["input_tokens"], usage["output_tokens"]) == (request["input_tokens"], request["output_tokens"])
    assert usage["cost_micros"] == round(usage["input_tokens"] * 2.0 + usage["output_tokens"] * 10.0)
    answer = await stored_answer(api, conversation, response_id)
    assert answer["content"] == expected and answer["status"] == "complete" and answer["model"] == model
    assert answer["usage"] == {k: usage[k] for k in ("input_tokens", "output_tokens", "cost_micros")}


async def test_429_with_retry_after_is_waited_out_and_retried(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    directive = '[[fake {"status": 429, "retry_after": 0.5, "times": 1, "key": "r429"}]]'
    start = time.monotonic()
    _, _, got = await turn(api, "gpt", f"rate limited {directive}")
    assert got[-1].event == "done" and got[0].data["model"] == "gpt"
    requests = await provider_calls(seen)
    assert [r["status"] for r in requests] == [429, 200]
    assert requests[1]["seen_at"] - requests[0]["seen_at"] >= 0.45, "retry-after was honoured"
    assert time.monotonic() - start >= 0.45


@pytest.mark.parametrize("status", [500, 503])
async def test_a_server_error_before_the_first_token_is_retried(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, status: int
) -> None:
    _, _, got = await turn(api, "gemini", f'flaky [[fake {{"status": {status}, "times": 1, "key": "s{status}"}}]]')
    assert got[-1].event == "done"
    assert [r["status"] for r in await provider_calls(seen)] == [status, 200]


async def test_an_overloaded_model_falls_back_and_meta_says_so(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    conversation, response_id, got = await turn(api, "gpt", 'busy [[fake {"status": 529, "times": 1, "key": "o"}]]')
    meta = got[0].data
    assert got[0].event == "meta" and meta["model"] == "claude" and meta["fallback_from"] == "gpt"
    assert got[-1].event == "done" and text_of(got)
    formats = [(r["format"], r["status"]) for r in await provider_calls(seen)]
    assert formats == [("openai", 529), ("anthropic", 200)], "an overloaded provider is not retried: the next model is"
    assert (await stored_answer(api, conversation, response_id))["model"] == "claude"


async def test_context_too_long_is_trimmed_and_retried_once(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    for i in range(3):
        async with api.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": f"earlier {i}", "model": "claude"}
        ) as r:
            await read_all(r)
    await seen.delete("/_fake/requests")
    directive = '[[fake {"context_length_exceeded": true, "times": 1, "key": "ctx"}]]'
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": f"now {directive}", "model": "claude"}
    ) as r:
        got = await read_all(r)
    assert got[-1].event == "done"
    first, second = await provider_calls(seen)
    assert first["status"] == 400 and second["status"] == 200
    assert len(second["body"]["messages"]) < len(first["body"]["messages"])


async def test_context_too_long_every_time_is_a_clear_error(api: httpx.AsyncClient) -> None:
    _, _, got = await turn(api, "gemini", 'huge [[fake {"context_length_exceeded": true}]]')
    assert got[-1].event == "error"
    assert got[-1].data["code"] == "context_length_exceeded" and got[-1].data["retryable"] is False


async def test_bad_credentials_are_not_retried(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    _, _, got = await turn(api, "gemini", 'who are you [[fake {"status": 401}]]')
    assert got[-1].event == "error" and got[-1].data["code"] == "provider_auth_failed"
    assert len(await provider_calls(seen)) == 1


async def test_a_connection_dropped_mid_stream_ends_with_a_retryable_error_and_keeps_the_partial(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation, response_id, got = await turn(api, "gpt", 'drop it [[fake {"drop_after": 4}]]')
    assert got[-1].event == "error" and got[-1].data["retryable"] is True
    partial = text_of(got)
    assert sum(f.event == "delta" for f in got) == 4
    assert len(await provider_calls(seen)) == 1, "never retried after text was shown"
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "interrupted" and answer["content"] == partial


async def test_an_error_event_mid_stream_is_not_retried(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    conversation, response_id, got = await turn(
        api, "claude", 'overload later [[fake {"error_after": 3, "stream_error": "overloaded"}]]'
    )
    assert got[-1].event == "error" and got[-1].data["code"] == "provider_overloaded"
    assert sum(f.event == "delta" for f in got) == 3
    assert len(await provider_calls(seen)) == 1
    assert (await stored_answer(api, conversation, response_id))["status"] == "interrupted"


async def test_a_provider_that_never_sends_a_token_times_out(api: httpx.AsyncClient, seen: httpx.AsyncClient) -> None:
    _, _, got = await turn(api, "gemini", 'hang [[fake {"first_token_delay": 30}]]')
    assert got[-1].event == "error" and got[-1].data["code"] == "provider_timeout"
    requests = await provider_calls(seen)
    assert len(requests) == 3, "the first try and two retries"
    assert all(r["client_closed"] for r in requests), "each timed-out call was hung up"


async def test_a_provider_that_goes_quiet_mid_answer_times_out_and_keeps_what_was_shown(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # A token every 4 s: the first arrives, then the stream is idle longer than the 1.5 s allowed.
    conversation, response_id, got = await turn(api, "claude", 'stall [[fake {"tokens": 5, "tokens_per_s": 0.25}]]')
    shown = text_of(got)
    assert shown, "the first token reached the client"
    assert got[-1].event == "error" and got[-1].data["code"] == "provider_timeout", got[-1]
    assert got[-1].data["retryable"] is True
    (request,) = await provider_calls(seen)
    assert request["client_closed"] and request["tokens_sent"] < 5, "hung up, not retried after text was shown"
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "interrupted" and answer["content"] == shown


async def test_slow_and_very_long_answers_stream_to_the_end(api: httpx.AsyncClient) -> None:
    conversation, response_id, got = await turn(api, "local", 'long [[fake {"tokens": 1500, "tokens_per_s": 3000}]]')
    assert got[-1].event == "done"
    text = text_of(got)
    assert text == "".join(answer_tokens("long", 1500))
    assert (await stored_answer(api, conversation, response_id))["content"] == text
    _, _, slow = await turn(api, "local", 'slow [[fake {"tokens": 6, "tokens_per_s": 4}]]')
    assert slow[-1].event == "done" and sum(f.event == "delta" for f in slow) >= 2


async def test_cancel_closes_the_upstream_connection_and_keeps_the_partial_answer(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    got: list[Frame] = []
    async with api.stream(
        "POST",
        f"/v1/conversations/{conversation}/messages",
        json={"content": 'go on [[fake {"tokens": 400, "tokens_per_s": 20}]]', "model": "claude"},
    ) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            got.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in got) == 3:
                cancelled_at = time.time()
                reply = await api.post(f"/v1/responses/{response_id}/cancel")
                assert reply.status_code == 202, (reply.text, got)
            if frame.event in ("done", "error"):
                break
    assert got[-1].event == "done" and got[-1].data["finish_reason"] == "cancelled"

    async def closed() -> dict[str, Any] | None:
        (request,) = await provider_calls(seen)
        return request if request["client_closed"] else None

    request = await eventually(closed, 5, "the provider's connection closed")
    assert request["closed_at"] - cancelled_at < 1.0
    assert request["tokens_sent"] < 400
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "interrupted" and answer["content"] == text_of(got)


async def test_a_server_error_that_outlasts_the_retries_falls_back_to_the_next_model(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    key = "x500-" + uuid.uuid4().hex[:8]
    conversation, response_id, got = await turn(
        api, "gpt", f'still broken [[fake {{"status": 500, "times": 3, "key": "{key}"}}]]'
    )
    meta = got[0].data
    assert got[0].event == "meta" and meta["model"] == "claude" and meta["fallback_from"] == "gpt"
    assert got[-1].event == "done" and text_of(got) == "".join(answer_tokens("still broken"))
    formats = [(r["format"], r["status"]) for r in await provider_calls(seen)]
    assert formats == [("openai", 500)] * 3 + [("anthropic", 200)], "the first try and two retries, then the fallback"
    answer = await stored_answer(api, conversation, response_id)
    assert answer["model"] == "claude" and answer["status"] == "complete"


async def test_a_turn_that_fails_before_any_token_is_stored_as_failed_with_its_error_code(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # Gemini has no fallback in this registry: a 5xx on every try ends the turn.
    conversation, response_id, got = await turn(api, "gemini", 'always down [[fake {"status": 500}]]')
    assert not any(f.event == "delta" for f in got)
    assert got[-1].event == "error"
    assert got[-1].data["code"] == "provider_error" and got[-1].data["retryable"] is True
    assert [r["status"] for r in await provider_calls(seen)] == [500] * 3
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "failed" and answer["content"] == "" and answer["model"] == "gemini"


async def test_a_model_served_at_its_own_base_url_is_called_there(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": "hello vllm", "model": "vllm"}
    ) as r:
        got = await read_all(r)
    assert got[-1].event == "done", got[-1]
    assert got[0].data["model"] == "vllm" and text_of(got)
    (request,) = await provider_calls(seen)
    assert request["model"] == "qwen-test", "the model's own server got the call, not its provider's"


# Characters that line-splitting readers (Python's str.splitlines, httpx's aiter_lines) take for
# line ends, though SSE does not: raw in a `data:` line, they would cut it into forged lines.
LINE_BREAKERS = "one\u2028two\u2029three\x85four"


async def test_unicode_line_separators_in_an_answer_reach_the_client_as_sent(api: httpx.AsyncClient) -> None:
    content = f'{LINE_BREAKERS} [[fake {{"echo": true}}]]'
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": "gpt"}
    ) as r:
        wire = await r.aread()
    got = parse(wire)  # as a browser reads it
    assert got[0].event == "meta" and got[-1].event == "done", got
    assert text_of(got) == LINE_BREAKERS
    # Read the way line-based SSE clients read it: no forged line either.
    for line in wire.decode().splitlines():
        assert line == "" or line.startswith(("id: ", "event: ", "data: ", ":")), f"a forged line: {line!r}"

    # The OpenAI-compatible stream, read the way line-based SSE clients read it.
    chunks: list[dict[str, Any]] = []
    async with api.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "gpt", "stream": True, "messages": [{"role": "user", "content": content}]},
    ) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines()]
    for line in lines:
        assert line == "" or line.startswith(("data: ", ":")), f"a forged line: {line!r}"
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(json.loads(line.removeprefix("data: ")))
    assert lines[-2:] == ["data: [DONE]", ""]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == LINE_BREAKERS


@pytest.mark.parametrize("model", ["gpt", "claude", "gemini"])
async def test_a_cancelled_answer_reports_and_stores_the_tokens_it_used(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, model: str
) -> None:
    content = 'count me [[fake {"tokens": 400, "tokens_per_s": 20}]]'
    counted = (await api.post("/v1/tokens/count", json={"content": content, "model": model})).json()
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    got: list[Frame] = []
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": model}
    ) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            got.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in got) == 3:
                assert (await api.post(f"/v1/responses/{response_id}/cancel")).status_code == 202
            if frame.event in ("done", "error"):
                break
    assert got[-1].event == "done" and got[-1].data["finish_reason"] == "cancelled"
    (request,) = await provider_calls(seen)
    usage = next(f.data for f in got if f.event == "usage")
    # The prompt as the provider counted it when it said so before the end (Anthropic, and Gemini
    # in every chunk's usageMetadata), else as Parley counted it before sending; the shown text
    # as Parley counts it.
    expected_input = request["input_tokens"] if model in ("claude", "gemini") else counted["input_tokens"]
    assert usage["input_tokens"] == expected_input > 0
    assert usage["output_tokens"] == counter_for("openai", "cl100k_base").text(text_of(got)) > 0
    assert usage["cost_micros"] == round(usage["input_tokens"] * 2.0 + usage["output_tokens"] * 10.0)
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "interrupted" and answer["content"] == text_of(got)
    assert answer["usage"] == {k: usage[k] for k in ("input_tokens", "output_tokens", "cost_micros")}


async def test_a_gemini_overload_written_after_its_events_falls_back_at_once(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # Gemini writes a mid-stream error as a JSON object after the events, outside any `data:`
    # line (vercel/ai#5217). Read as "the stream ended early", a 503 was retried on the same
    # overloaded model instead of moving to the next one.
    key = "g503-" + uuid.uuid4().hex[:8]
    directive = f'[[fake {{"error_after": 0, "stream_error": "overloaded", "times": 1, "key": "{key}"}}]]'
    conversation, response_id, got = await turn(api, "gemini-fb", f"busy gemini {directive}")
    meta = got[0].data
    assert got[0].event == "meta" and meta["model"] == "claude" and meta["fallback_from"] == "gemini-fb", meta
    assert got[-1].event == "done" and text_of(got) == "".join(answer_tokens("busy gemini"))
    formats = [(r["format"], r["status"]) for r in await provider_calls(seen)]
    assert formats == [("gemini", 200), ("anthropic", 200)], "not retried on the overloaded model"
    assert (await stored_answer(api, conversation, response_id))["model"] == "claude"


async def test_a_gemini_error_after_its_finish_reason_ends_the_turn_with_that_error(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # The chunk with finishReason STOP came, then the error: the answer was cut short, and was
    # shown and stored as complete.
    directive = '[[fake {"error_after": 3, "stream_error": "overloaded", "error_after_finish": true}]]'
    conversation, response_id, got = await turn(api, "gemini", f"cut short {directive}")
    assert sum(f.event == "delta" for f in got) == 3
    assert got[-1].event == "error", got[-1]
    assert got[-1].data["code"] == "provider_overloaded" and got[-1].data["retryable"] is True
    assert not any(f.event == "done" for f in got)
    assert len(await provider_calls(seen)) == 1, "never retried after text was shown"
    answer = await stored_answer(api, conversation, response_id)
    assert answer["status"] == "interrupted" and answer["content"] == text_of(got)


@pytest.mark.parametrize(
    ("model", "directive", "finish_reason"),
    [
        ("gpt", {"refusal": True}, "content_filter"),
        ("gemini", {"finish_reason": "SAFETY"}, "content_filter"),
        ("gemini", {"finish_reason": "OTHER"}, "other"),
        ("claude", {"finish_reason": "refusal"}, "content_filter"),
    ],
)
async def test_a_refused_blocked_or_odd_ending_is_shown_and_its_finish_reason_says_so(
    api: httpx.AsyncClient, model: str, directive: dict[str, Any], finish_reason: str
) -> None:
    # OpenAI streams a refusal in `delta.refusal` (content null) and ends it "stop": the user
    # saw an empty answer that looked complete. Gemini's OTHER (and any reason Parley does not
    # know) ended as a clean "stop".
    conversation, response_id, got = await turn(api, model, f"say no [[fake {json.dumps(directive)}]]")
    assert text_of(got) == "".join(answer_tokens("say no")), "the refusal's text is shown"
    assert got[-1].event == "done" and got[-1].data["finish_reason"] == finish_reason
    assert (await stored_answer(api, conversation, response_id))["content"] == text_of(got)


async def completion(api: httpx.AsyncClient, model: str, text: str, **options: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **options}
    reply = await api.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def test_a_refusal_through_the_openai_compatible_api_ends_content_filter(api: httpx.AsyncClient) -> None:
    # OpenAI's own API ends a filtered or refused answer with finish_reason "content_filter";
    # Parley's compatible endpoint said "stop", as if the answer were complete.
    got = await completion(api, "gpt", f"say no {uuid.uuid4().hex} [[fake {json.dumps({'refusal': True})}]]")
    assert got["choices"][0]["finish_reason"] == "content_filter"
    assert got["choices"][0]["message"]["content"], "the refusal's text is shown"


async def test_the_users_temperature_reaches_the_provider_as_given_and_none_is_sent_when_unset(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # Before: an explicit 0 was dropped (the provider sampled at its default) and every other
    # request carried 1.0.
    await completion(api, "gpt", "greedy " + uuid.uuid4().hex, temperature=0)
    await completion(api, "gemini", "greedy " + uuid.uuid4().hex, temperature=0)
    await completion(api, "claude", "unset " + uuid.uuid4().hex)
    await completion(api, "gpt", "warm " + uuid.uuid4().hex, temperature=0.7)
    gpt, gemini, claude, warm = [r["body"] for r in await provider_calls(seen)]
    assert gpt["temperature"] == 0 and gemini["generationConfig"]["temperature"] == 0
    assert "temperature" not in claude
    assert warm["temperature"] == 0.7, "as asked, not the float32 the bus carries it in"


async def test_a_model_that_refuses_temperature_gets_none_and_its_output_limit_in_its_own_field(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # The field is chosen by the model's registry entry, not by the host name: here both
    # models are served by the same (fake) host.
    await completion(api, "reasoner", "think " + uuid.uuid4().hex, temperature=0.3, max_tokens=20)
    await completion(api, "gpt", "plain " + uuid.uuid4().hex, max_tokens=20)
    reasoner, gpt = [r["body"] for r in await provider_calls(seen)]
    assert "temperature" not in reasoner, "the user's temperature is not sent to a model that refuses it"
    assert reasoner["max_completion_tokens"] == 20 and "max_tokens" not in reasoner
    assert gpt["max_tokens"] == 20 and "max_completion_tokens" not in gpt


async def test_temperature_zero_on_a_model_that_refuses_temperature_is_not_served_from_the_cache(
    pstack: Stack, api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # Such a model samples at its own default whatever the user asked: storing its answer as
    # the deterministic answer to the prompt would serve one random sample for an hour.
    sampled, greedy = "sampled " + uuid.uuid4().hex, "greedy " + uuid.uuid4().hex
    before = await cache_entries(pstack)
    await completion(api, "reasoner", sampled, temperature=0)
    await completion(api, "gpt", greedy, temperature=0)
    await one_more_cached(pstack, before)  # the gpt answer
    assert await cache_entries(pstack) == before + 1, "the reasoner's answer is not cached"
    again = await completion(api, "reasoner", sampled, temperature=0)
    assert again["usage"]["completion_tokens"] > 0, "answered by the provider again"
    cached = await completion(api, "gpt", greedy, temperature=0)
    assert cached["usage"]["completion_tokens"] == 0, "a temperature-0 answer of a model that takes it is cached"
    assert [r["model"] for r in await provider_calls(seen)] == ["reasoner-test", "gpt-test", "reasoner-test"]


async def test_a_deterministic_answer_that_did_not_end_cleanly_is_not_served_from_the_cache(
    pstack: Stack, api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    # Gemini's OTHER (or a safety stop) at temperature 0: were it cached, the cut-short or
    # blocked answer would be served again for an hour without asking the model.
    odd = 'odd ending [[fake {"finish_reason": "OTHER"}]] ' + uuid.uuid4().hex
    clean = "clean ending " + uuid.uuid4().hex
    before = await cache_entries(pstack)
    await completion(api, "gemini", odd, temperature=0)
    await completion(api, "gemini", clean, temperature=0)
    await one_more_cached(pstack, before)  # the clean answer
    assert await cache_entries(pstack) == before + 1, "the odd answer is not cached"
    again = await completion(api, "gemini", odd, temperature=0)
    assert again["usage"]["completion_tokens"] > 0, "answered by the provider again"
    assert len(await provider_calls(seen)) == 3
