"""The context window is filled by tokens, not by a fixed number of messages: a model with a
large window sees a long conversation whole (well past 40 messages), a small one sees its
newest turns and says in meta how many it left out. Through the whole system, with the fake
provider server's record of the prompts it received."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from parley_common.clients.history import HistoryClient
from parley_common.context.prompt import DEFAULT_SYSTEM_PROMPT
from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, provider_calls
from tests.support.models import context_registry
from tests.support.sse import Frame, read_all
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_context_" + secrets.token_urlsafe(12)
USER = "ctx-user"
EARLIER_TURNS = 45  # 90 stored messages: more than twice the old fixed 40


@pytest.fixture(scope="module")
async def cstack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = stack_config(
        infra,
        tmp_path_factory.mktemp("context-stack"),
        "tw",
        "pk_test_context_dev_" + secrets.token_urlsafe(12),
        {
            "PARLEY_WORKER_PROVIDERS": '["demo", "openai"]',
            "PARLEY_PROVIDER_API_KEYS": json.dumps({"openai": "sk-test-openai"}),
            "PARLEY_API_KEYS": json.dumps({USER: KEY}),
        },
        registry=context_registry(fake),
    )
    async with own_stack(config) as stack:
        yield stack


@pytest.fixture
async def api(cstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cstack.base_url, KEY) as client:
        yield client


def earlier(i: int) -> tuple[str, str]:
    return f"Question {i:02d}: what about topic {i}?", f"Answer {i:02d}: topic {i} is explained here."


@pytest.fixture
async def long_conversation(api: httpx.AsyncClient, cstack: Stack) -> str:
    """A conversation of EARLIER_TURNS question/answer turns, written straight into history."""
    conversation = str((await api.post("/v1/conversations", json={})).json()["id"])
    history = HistoryClient(f"127.0.0.1:{cstack.history_port}")
    start_ms = int(time.time() * 1000) - 10 * 60 * 1000
    try:
        for i in range(EARLIER_TURNS):
            question, answer = earlier(i)
            at = start_ms + i * 1000
            await history.append_message(USER, conversation, f"q{i:02d}", "user", question, at)
            await history.append_message(USER, conversation, f"a{i:02d}", "assistant", answer, at + 1)
    finally:
        await history.close()
    return conversation


async def send(api: httpx.AsyncClient, conversation: str, content: str, model: str) -> list[Frame]:
    async with api.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, "model": model}
    ) as r:
        assert r.status_code == 200, await r.aread()
        got = await read_all(r)
    assert got[0].event == "meta" and got[-1].event == "done", [f.event for f in got]
    return got


async def prompt_received(seen: httpx.AsyncClient) -> list[dict[str, Any]]:
    calls = await provider_calls(seen)
    assert len(calls) == 1, calls
    return list(calls[0]["body"]["messages"])


async def test_a_large_window_gets_the_whole_long_conversation(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, long_conversation: str
) -> None:
    got = await send(api, long_conversation, "Now sum it all up.", "wide")
    expected = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    for i in range(EARLIER_TURNS):
        question, answer = earlier(i)
        expected += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    expected.append({"role": "user", "content": "Now sum it all up."})
    assert await prompt_received(seen) == expected, "every earlier message, oldest first"
    assert (got[0].data["dropped_messages"], got[0].data["truncated_messages"]) == (0, 0)


async def test_a_small_window_keeps_the_newest_turns_and_reports_the_rest_dropped(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, long_conversation: str
) -> None:
    draft = {"conversation_id": long_conversation, "content": "And the last one?", "model": "small"}
    counted = (await api.post("/v1/tokens/count", json=draft)).json()
    got = await send(api, long_conversation, "And the last one?", "small")
    prompt = await prompt_received(seen)
    sent = prompt[1:-1]
    assert 0 < len(sent) < 2 * EARLIER_TURNS and sent[0]["role"] == "user"
    newest = [m["content"] for m in sent]
    tail = [text for i in range(EARLIER_TURNS) for text in earlier(i)][-len(sent) :]
    assert newest == tail, "the newest turns, whole and in order"
    assert got[0].data["dropped_messages"] > 0 and got[0].data["truncated_messages"] == 0
    # The count shown before sending is the count of what was sent.
    assert counted["dropped_messages"] == got[0].data["dropped_messages"]


async def test_a_message_too_long_for_the_window_is_cut_and_meta_says_so(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation = str((await api.post("/v1/conversations", json={})).json()["id"])
    got = await send(api, conversation, "a long story " * 600, "small")
    prompt = await prompt_received(seen)
    assert "tokens cut here to fit the context window" in prompt[-1]["content"]
    assert (got[0].data["dropped_messages"], got[0].data["truncated_messages"]) == (0, 1)
