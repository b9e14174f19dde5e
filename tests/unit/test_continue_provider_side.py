"""The provider side of "continue": which models can go on from a partial answer, how each
adapter asks its provider to, and the fake provider server answering such requests with the
rest of the answer in every wire format (adapters on a real socket)."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_common.models import ModelRegistry
from parley_dev.fake_providers import FakeProviderServer, answer_tokens
from parley_worker.providers import Chunk, Finish, Provider, TextChunk, anthropic, gemini, openai, without_shown_tail
from parley_worker.providers.anthropic import AnthropicProvider
from parley_worker.providers.demo import DemoProvider, demo_answer
from parley_worker.providers.gemini import GeminiProvider
from parley_worker.providers.http import StreamTimeouts
from parley_worker.providers.openai import OpenAIProvider

KEY = SecretStr("sk-test")
RELAXED = StreamTimeouts(connect_s=5, first_token_s=20, idle_s=20, total_s=60)


def registry(**providers: dict[str, Any]) -> ModelRegistry:
    models = {
        name: {
            "provider": name,
            "upstream_model": f"{name}-1",
            "context_window": 8192,
            "max_output_tokens": 512,
            "input_price_per_mtok": 0,
            "output_price_per_mtok": 0,
        }
        for name in providers
    }
    return ModelRegistry.model_validate(
        {"default_model": next(iter(providers)), "providers": providers, "models": models}
    )


def test_which_models_can_continue_follows_the_providers_documented_apis() -> None:
    reg = registry(
        claude={"kind": "anthropic", "base_url": "http://a"},
        demo={"kind": "demo"},
        gpt={"kind": "openai", "base_url": "http://o/v1"},
        vllm={"kind": "openai", "base_url": "http://v/v1", "continue_final_message": True},
        gemini={"kind": "gemini", "base_url": "http://g"},
    )
    assert {name: reg.can_continue(name) for name in reg.models} == {
        "claude": True,
        "demo": True,
        "gpt": False,
        "vllm": True,
        "gemini": False,
    }
    assert not reg.can_continue("no-such-model")


def test_a_models_own_setting_overrides_its_providers() -> None:
    raw = registry(claude={"kind": "anthropic", "base_url": "http://a"}).model_dump(exclude_defaults=True)
    raw["models"]["claude"]["continue_final_message"] = False  # a Claude that refuses a prefill
    assert not ModelRegistry.model_validate(raw).can_continue("claude")


def continuing(text: str, shown: str, *, system: str = "") -> chat_pb2.ProviderJob:
    messages = [chat_pb2.PromptMessage(role="system", content=system)] if system else []
    messages.append(chat_pb2.PromptMessage(role="user", content=text))
    return chat_pb2.ProviderJob(
        upstream_model="m-1", max_output_tokens=100, messages=messages, continue_from=shown, model="m"
    )


def test_anthropic_sends_the_partial_answer_as_the_last_assistant_turn_without_trailing_whitespace() -> None:
    body = anthropic.request_body(continuing("hi", "Hello there,\n ", system="be brief"))
    assert body["system"] == "be brief"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello there,"}]},
    ]
    # Only whitespace shown: nothing to prefill (an empty assistant turn is refused).
    assert anthropic.request_body(continuing("hi", "  "))["messages"][-1]["role"] == "user"


def test_openai_compatible_servers_get_vllms_continue_final_message() -> None:
    body = openai.request_body(continuing("hi", "Hello "))
    assert body["messages"][-1] == {"role": "assistant", "content": "Hello "}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    plain = openai.request_body(continuing("hi", ""))
    assert "continue_final_message" not in plain and "add_generation_prompt" not in plain
    assert plain["messages"][-1]["role"] == "user"


def test_gemini_ends_the_contents_with_the_models_turn() -> None:
    body = gemini.request_body(continuing("hi", "Hello "))
    assert body["contents"][-1] == {"role": "model", "parts": [{"text": "Hello "}]}
    assert gemini.request_body(continuing("hi", ""))["contents"][-1]["role"] == "user"


async def _chunks(*texts: str) -> AsyncGenerator[Chunk, None]:
    for text in texts:
        yield TextChunk(text)
    yield Finish("stop")


async def _texts(chunks: AsyncGenerator[Chunk, None]) -> list[str]:
    return [c.text async for c in chunks if isinstance(c, TextChunk)]


@pytest.mark.parametrize(
    ("tail", "sent", "kept"),
    [
        (" ", [" world", "!"], ["world", "!"]),
        ("\n\n", ["\n", "\n", "Next"], ["Next"]),
        ("\n\n", ["\nNext"], ["Next"]),
        ("\n", ["Next", "\n"], ["Next", "\n"]),  # not repeated: kept whole
        ("", [" a", " b"], [" a", " b"]),
        (" ", ["  two spaces"], [" two spaces"]),
    ],
)
async def test_the_whitespace_left_out_of_a_prefill_is_not_shown_twice(
    tail: str, sent: list[str], kept: list[str]
) -> None:
    assert await _texts(without_shown_tail(_chunks(*sent), tail)) == kept


async def test_the_demo_provider_goes_on_with_the_rest_of_its_answer() -> None:
    demo = DemoProvider(0, 10_000)
    job = continuing("tell me", "")
    whole = "".join(await _texts(demo.stream(job)))
    assert whole == demo_answer(list(job.messages))
    for cut in (1, len(whole) // 2, len(whole) - 1):
        job.continue_from = whole[:cut]
        rest = "".join(await _texts(demo.stream(job)))
        assert job.continue_from + rest == whole, f"cut at {cut}"
    # Length-stopped, then continued: the limit counts only the new text.
    job.continue_from, job.max_output_tokens = "", 3
    first = "".join(await _texts(demo.stream(job)))
    job.continue_from = first
    chunks = [c async for c in demo.stream(job)]
    assert [c for c in chunks if isinstance(c, Finish)] == [Finish("length")]
    pieces = re.findall(r"\s*\S+", whole)
    assert first == "".join(pieces[:3])
    assert first + "".join(c.text for c in chunks if isinstance(c, TextChunk)) == "".join(pieces[:6])


def make(name: str, base: str, client: httpx.AsyncClient) -> Provider:
    if name == "openai":
        return OpenAIProvider(name=name, base_url=f"{base}/v1", api_key=KEY, client=client, timeouts=RELAXED)
    if name == "anthropic":
        return AnthropicProvider(name=name, base_url=base, api_key=KEY, client=client, timeouts=RELAXED)
    return GeminiProvider(name=name, base_url=base, api_key=KEY, client=client, timeouts=RELAXED)


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
async def test_each_wire_format_continues_a_partial_answer_with_exactly_the_rest(
    name: str, fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    prompt = "continue me please"
    tokens = answer_tokens(prompt, 12)
    content = f'{prompt} [[fake {{"tokens": 12}}]]'
    provider = make(name, fake_provider.url, provider_http)
    # Shown so far: five tokens and the space of the sixth (a trailing whitespace, which
    # Anthropic refuses in a prefill).
    shown = "".join(tokens[:5]) + " "
    job = continuing(content, shown)
    async with aclosing(provider.stream(job)) as chunks:
        rest = "".join([c.text async for c in chunks if isinstance(c, TextChunk)])
    assert shown + rest == "".join(tokens), "the old text then the continuation, nothing repeated or lost"
    sent = fake_provider.app.requests[-1]
    assert sent.completed and sent.tokens_sent == 7


async def test_the_fake_refuses_what_the_providers_refuse(
    fake_provider: FakeProviderServer, provider_http: httpx.AsyncClient
) -> None:
    trailing = {
        "model": "m",
        "max_tokens": 9,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello "}],
    }
    reply = await provider_http.post(
        f"{fake_provider.url}/v1/messages", json=trailing, headers={"anthropic-version": "2023-06-01"}
    )
    assert reply.status_code == 400 and "trailing whitespace" in reply.text
    both = {
        "model": "m",
        "stream": True,
        "continue_final_message": True,
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}],
    }
    reply = await provider_http.post(f"{fake_provider.url}/v1/chat/completions", json=both)
    assert reply.status_code == 400 and "add_generation_prompt" in reply.text
