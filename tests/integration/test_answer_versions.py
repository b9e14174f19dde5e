"""Answers you can steer, through the whole system: regenerate, edit and resend, switch the
version shown, continue an answer; attachments in history. The provider is the fake provider
server (a real HTTP process), which records every prompt it was sent."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from parley_dev.fake_providers import answer_tokens
from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, provider_calls, stored_message
from tests.support.media import photo_jpeg
from tests.support.models import PRICES, demo_model, model
from tests.support.polling import eventually
from tests.support.sse import Frame, frames, read_all, text_of
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_versions_" + secrets.token_urlsafe(12)
MALLORY = "pk_test_mallory_" + secrets.token_urlsafe(12)


def registry(fake_url: str) -> dict[str, Any]:
    def priced(provider: str, upstream: str) -> dict[str, Any]:
        return model(provider, upstream, context_window=100_000, max_output_tokens=4000, **PRICES)

    return {
        "default_model": "gpt",
        "providers": {
            "demo": {"kind": "demo"},
            # The fake speaks vLLM's continue_final_message, and continues Gemini's model turn.
            "openai": {"kind": "openai", "base_url": f"{fake_url}/v1", "continue_final_message": True},
            "anthropic": {"kind": "anthropic", "base_url": fake_url},
            "gemini": {"kind": "gemini", "base_url": fake_url, "continue_final_message": True},
            # Like OpenAI's own API: no way to continue a partial answer.
            "plain": {"kind": "openai", "base_url": f"{fake_url}/v1"},
        },
        "models": {
            "demo": demo_model(context_window=100_000, max_output_tokens=4000),
            "gpt": priced("openai", "gpt-test"),
            "claude": priced("anthropic", "claude-test"),
            "gemini": priced("gemini", "gemini-test"),
            "plain": priced("plain", "plain-test"),
        },
    }


@pytest.fixture(scope="module")
async def vstack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    config = stack_config(
        infra,
        tmp_path_factory.mktemp("versions-stack"),
        "tv",
        KEY,
        {
            "PARLEY_API_KEYS": f'{{"mallory": "{MALLORY}"}}',
            "PARLEY_WORKER_PROVIDERS": '["demo", "openai", "anthropic", "gemini", "plain"]',
            "PARLEY_PROVIDER_API_KEYS": json.dumps(
                {"openai": "sk-test-openai", "anthropic": "sk-ant-test", "gemini": "g-test-key", "plain": "sk-p"}
            ),
            "PARLEY_HEARTBEAT_S": "1",
            "PARLEY_REQUESTS_PER_MINUTE": "100000",
            # Every answer from the provider: a repeated prompt is not served from the cache.
            "PARLEY_RESPONSE_CACHE_TTL_S": "0",
        },
        registry=registry(fake),
    )
    async with own_stack(config) as stack:
        yield stack


@pytest.fixture
async def api(vstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(vstack.base_url, KEY) as client:
        yield client


@pytest.fixture
async def mallory(vstack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(vstack.base_url, MALLORY) as client:
        yield client


async def streamed(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> tuple[str, list[Frame]]:
    async with api.stream("POST", path, json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        got = await read_all(reply)
    assert got[-1].event == "done", got[-1]
    return reply.headers["x-parley-response-id"], got


async def new_conversation(api: httpx.AsyncClient) -> str:
    reply = await api.post("/v1/conversations", json={})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def path_of(api: httpx.AsyncClient, conversation: str, leaf: str, status: str = "") -> list[dict[str, Any]]:
    """The current path (oldest first), once its leaf is `leaf` (answers are stored from the bus)."""

    async def ended() -> list[dict[str, Any]] | None:
        data = (await api.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
        if data and data[0]["id"] == leaf and (not status or data[0]["status"] == status):
            return list(reversed(data))
        return None

    return await eventually(ended, 20, f"the path ending at {leaf}")


def prompt_texts(call: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of the chat messages an OpenAI-format call carried, system left out."""
    out = []
    for message in call["body"]["messages"]:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        if message["role"] != "system":
            out.append((message["role"], text))
    return out


async def test_regenerate_three_times_switch_and_the_next_prompt_holds_only_the_chosen_path(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, mallory: httpx.AsyncClient
) -> None:
    conversation = await new_conversation(api)
    base = f"/v1/conversations/{conversation}/messages"
    first, _ = await streamed(api, base, {"content": "What is a river?"})
    second, _ = await streamed(api, base, {"content": "And what is a lake?"})
    path = await path_of(api, conversation, second)
    question2 = path[2]["id"]
    # Three more versions of the second answer, each shorter than the one before it, so that
    # each has a text of its own.
    versions = [second]
    for n, limit in enumerate((6, 4, 2)):
        rid, got = await streamed(
            api, f"{base}/{second}/regenerate", {"client_request_id": f"again-{n}", "max_output_tokens": limit}
        )
        assert text_of(got) == "".join(answer_tokens("And what is a lake?")[:limit])
        versions.append(rid)
        shown = await path_of(api, conversation, rid)
        assert shown[-1]["versions"] == {"index": n + 2, "count": n + 2, "ids": versions}
        assert shown[-1]["parent_id"] == question2 and shown[-1]["finish_reason"] == "length"
    # Each regeneration's prompt was the conversation up to its question only.
    calls = await provider_calls(seen)
    assert [prompt_texts(c)[-1] for c in calls[-3:]] == [("user", "And what is a lake?")] * 3
    assert all(len(prompt_texts(c)) == 3 for c in calls[-3:])
    # The same client_request_id again is the same response, not a fifth version.
    async with api.stream("POST", f"{base}/{second}/regenerate", json={"client_request_id": "again-0"}) as again:
        assert again.status_code == 200 and again.headers["x-parley-response-id"] == versions[1]
        await read_all(again)
    # Switch to the second version; the conversation's path goes through it.
    chosen = versions[1]
    switched = await api.put(f"/v1/conversations/{conversation}/current", json={"message_id": chosen})
    assert switched.status_code == 200, switched.text
    assert switched.json()["current_message_id"] == chosen
    shown = await path_of(api, conversation, chosen)
    assert [m["id"] for m in shown] == [path[0]["id"], first, question2, chosen]
    chosen_text = shown[-1]["content"]
    await streamed(api, base, {"content": "Which is bigger?"})
    prompt = prompt_texts((await provider_calls(seen))[-1])
    assert prompt == [
        ("user", "What is a river?"),
        ("assistant", shown[1]["content"]),
        ("user", "And what is a lake?"),
        ("assistant", chosen_text),
        ("user", "Which is bigger?"),
    ]
    # Another user's ids are not found, whichever endpoint.
    for method, url, body in (
        ("POST", f"{base}/{second}/regenerate", {}),
        ("POST", f"{base}/{question2}/edit", {"content": "mine now"}),
        ("POST", f"{base}/{second}/continue", {}),
        ("PUT", f"/v1/conversations/{conversation}/current", {"message_id": second}),
    ):
        refused = await mallory.request(method, url, json=body)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "conversation_not_found", url
    missing = await api.post(f"{base}/m_nope/regenerate", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "message_not_found"


async def test_edit_and_resend_makes_a_version_of_the_question_and_a_new_answer(
    api: httpx.AsyncClient, seen: httpx.AsyncClient
) -> None:
    conversation = await new_conversation(api)
    base = f"/v1/conversations/{conversation}/messages"
    first, _ = await streamed(api, base, {"content": "Name a colour"})
    second, _ = await streamed(api, base, {"content": "Name a fruit"})
    path = await path_of(api, conversation, second)
    edited_answer, got = await streamed(
        api, f"{base}/{path[2]['id']}/edit", {"content": "Name a vegetable", "client_request_id": "e1"}
    )
    assert text_of(got) == "".join(answer_tokens("Name a vegetable"))
    shown = await path_of(api, conversation, edited_answer)
    assert [m["content"] for m in shown[:3]] == ["Name a colour", shown[1]["content"], "Name a vegetable"]
    assert shown[2]["versions"]["count"] == 2 and shown[2]["versions"]["index"] == 2
    assert shown[2]["versions"]["ids"][0] == path[2]["id"] and shown[2]["parent_id"] == first
    assert prompt_texts((await provider_calls(seen))[-1])[-1] == ("user", "Name a vegetable")
    # Back to the first version of the question: down to its own answer.
    switched = await api.put(f"/v1/conversations/{conversation}/current", json={"message_id": path[2]["id"]})
    assert switched.json()["current_message_id"] == second
    # Sync carries every version and the current leaf.
    changes = (await api.get("/v1/sync")).json()["data"]
    mine = [c for c in changes if c["conversation_id"] == conversation]
    assert {c["message"]["id"] for c in mine if "message" in c} >= {second, edited_answer, path[2]["id"]}
    assert mine[-1]["type"] == "conversation.updated" and mine[-1]["current_message_id"] == second


@pytest.mark.parametrize("model", ["gpt", "claude", "gemini"])
async def test_an_interrupted_answer_is_continued_into_the_same_message_exactly_once(
    api: httpx.AsyncClient, seen: httpx.AsyncClient, model: str
) -> None:
    conversation = await new_conversation(api)
    question = f"Tell me a long story about {model} and the sea"
    full = "".join(answer_tokens(question))
    async with api.stream(
        "POST",
        f"/v1/conversations/{conversation}/messages",
        json={
            "content": question + ' [[fake {"tokens_per_s": 8, "times": 1, "key": "' + model + conversation + '"}]]',
            "model": model,
        },
    ) as reply:
        assert reply.status_code == 200
        answer_id = reply.headers["x-parley-response-id"]
        got: list[Frame] = []
        asked = False
        async for frame in frames(reply):
            got.append(frame)
            if not asked and sum(1 for f in got if f.event == "delta") == 3:
                cancelled = await api.post(f"/v1/responses/{answer_id}/cancel")
                assert cancelled.status_code == 202
                asked = True
            if frame.event in ("done", "error"):
                break
    stored = await stored_message(api, conversation, answer_id, ("interrupted",))
    shown = stored["content"]
    assert shown and full.startswith(shown) and shown != full
    rid, more = await streamed(
        api, f"/v1/conversations/{conversation}/messages/{answer_id}/continue", {"client_request_id": "go-on"}
    )
    assert rid != answer_id
    new_text = text_of(more)
    assert new_text and more[0].event == "meta"
    # The provider was asked to go on from the shown text, in its own wire format.
    call = (await provider_calls(seen))[-1]
    assert call["format"] == {"gpt": "openai", "claude": "anthropic", "gemini": "gemini"}[model]
    done = await stored_message(api, conversation, answer_id, ("complete",))
    assert done["content"] == shown + new_text == full
    # The same request again attaches to the same response and appends nothing.
    _, again = await streamed(
        api, f"/v1/conversations/{conversation}/messages/{answer_id}/continue", {"client_request_id": "go-on"}
    )
    assert text_of(again) == new_text
    data = (await api.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    assert [m["content"] for m in data if m["id"] == answer_id] == [full]
    assert len(data) == 2
    # A finished answer cannot be continued.
    refused = await api.post(f"/v1/conversations/{conversation}/messages/{answer_id}/continue", json={})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_continuable"


async def test_a_length_stopped_answer_continues_and_a_provider_that_cannot_says_so(api: httpx.AsyncClient) -> None:
    conversation = await new_conversation(api)
    base = f"/v1/conversations/{conversation}/messages"
    question = "Describe the mountains in spring"
    answer_id, got = await streamed(api, base, {"content": question, "model": "claude", "max_output_tokens": 3})
    assert got[-1].data["finish_reason"] == "length"
    stored = await stored_message(api, conversation, answer_id, ("complete",))
    assert stored["finish_reason"] == "length"
    _, more = await streamed(api, f"{base}/{answer_id}/continue", {})
    # Stored from the bus just after the stream ends; "complete" before and after.
    done = await stored_message(api, conversation, answer_id, ("complete",), finish_reason="stop")
    assert done["content"] == stored["content"] + text_of(more) == "".join(answer_tokens(question))
    plain = await new_conversation(api)
    cut, _ = await streamed(
        api, f"/v1/conversations/{plain}/messages", {"content": question, "model": "plain", "max_output_tokens": 2}
    )
    await stored_message(api, plain, cut, ("complete",))
    refused = await api.post(f"/v1/conversations/{plain}/messages/{cut}/continue", json={})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "continue_unsupported"


async def test_attachments_are_listed_with_fresh_urls_and_deleted_with_their_conversation(
    api: httpx.AsyncClient,
) -> None:
    upload = await api.post("/v1/media", files={"file": ("photo.jpg", photo_jpeg(640, 480, 3), "image/jpeg")})
    assert upload.status_code == 201, upload.text
    media_id = upload.json()["id"]
    conversation = await new_conversation(api)
    answer, _ = await streamed(
        api,
        f"/v1/conversations/{conversation}/messages",
        {"content": "What is in this photo?", "media_ids": [media_id], "model": "demo"},
    )
    shown = await path_of(api, conversation, answer)
    media = shown[0]["media"]
    assert [m["id"] for m in media] == [media_id]
    assert media[0]["url"] and media[0]["content_type"].startswith("image/") and media[0]["width"] > 0
    fetched = await api.get(media[0]["url"]) if media[0]["url"].startswith("http") else None
    assert fetched is None or fetched.status_code == 200
    assert (await api.get(f"/v1/media/{media_id}")).status_code == 200
    assert (await api.delete(f"/v1/conversations/{conversation}")).status_code == 204
    gone = await api.get(f"/v1/media/{media_id}")
    assert gone.status_code == 404


async def test_switching_versions_waits_for_the_answer_streaming_in_the_conversation(api: httpx.AsyncClient) -> None:
    conversation = await new_conversation(api)
    base = f"/v1/conversations/{conversation}/messages"
    first, _ = await streamed(api, base, {"content": "Say something"})
    again, _ = await streamed(api, f"{base}/{first}/regenerate", {})
    await path_of(api, conversation, again)
    slow = 'Say more [[fake {"tokens_per_s": 4, "times": 1, "key": "' + conversation + '"}]]'
    async with api.stream("POST", base, json={"content": slow}) as reply:
        assert reply.status_code == 200
        streaming = reply.headers["x-parley-response-id"]
        async for frame in frames(reply):
            if frame.event == "delta":
                refused = await api.put(f"/v1/conversations/{conversation}/current", json={"message_id": first})
                assert refused.status_code == 409 and refused.json()["error"]["code"] == "turn_in_progress"
                assert (await api.post(f"/v1/responses/{streaming}/cancel")).status_code in (200, 202)
                break
    await stored_message(api, conversation, streaming, ("interrupted",))
    switched = await api.put(f"/v1/conversations/{conversation}/current", json={"message_id": first})
    assert switched.status_code == 200 and switched.json()["current_message_id"] == first


async def test_the_openapi_document_lists_the_new_endpoints(api: httpx.AsyncClient) -> None:
    paths = (await api.get("/openapi.json")).json()["paths"]
    for path, method in (
        ("/v1/conversations/{conversation_id}/messages/{message_id}/regenerate", "post"),
        ("/v1/conversations/{conversation_id}/messages/{message_id}/edit", "post"),
        ("/v1/conversations/{conversation_id}/messages/{message_id}/continue", "post"),
        ("/v1/conversations/{conversation_id}/current", "put"),
    ):
        assert method in paths[path], path
