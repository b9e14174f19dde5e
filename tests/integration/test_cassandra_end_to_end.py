"""The five services with PARLEY_HISTORY_STORE=cassandra, on the session's real Cassandra node:
what a client does with its history — a turn, paging, rename, delete, offline sync, the
token-budgeted context, an image turn — works as it does on the embedded store."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from parley_common.clients.history import HistoryClient
from parley_dev.cassandra import CassandraEndpoint
from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.required import unavailable
from tests.support.api import api_client, assert_error, provider_calls, stored_messages
from tests.support.media import photo_jpeg
from tests.support.models import context_registry
from tests.support.polling import eventually
from tests.support.sse import Frame, read_all, text_of
from tests.support.stacks import own_stack, stack_config

KEY = "pk_test_cass_" + secrets.token_urlsafe(12)
USER = "cass-user"
OTHER_KEY = "pk_test_cass_other_" + secrets.token_urlsafe(12)
SETTLE_MS = 3000


@pytest.fixture(scope="module")
async def cass_stack(
    infra: Infra, fake: str, cassandra: CassandraEndpoint, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    config = stack_config(
        infra,
        tmp_path_factory.mktemp("cassandra-stack"),
        "tc",
        "pk_test_cass_dev_" + secrets.token_urlsafe(12),
        {
            **cassandra.env("e2e_" + uuid.uuid4().hex[:10]),
            "PARLEY_CASSANDRA_REQUEST_TIMEOUT_S": "2",
            "PARLEY_HISTORY_SYNC_SETTLE_MS": str(SETTLE_MS),
            "PARLEY_WORKER_PROVIDERS": '["demo", "openai"]',
            "PARLEY_PROVIDER_API_KEYS": json.dumps({"openai": "sk-test-openai"}),
            "PARLEY_API_KEYS": json.dumps({USER: KEY, "cass-other": OTHER_KEY}),
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "5",
            "PARLEY_DEMO_TOKENS_PER_S": "2000",
            "PARLEY_REQUESTS_PER_MINUTE": "100000",
        },
        registry=context_registry(fake),
    )
    async with own_stack(config, timeout_s=120) as stack:
        yield stack


@pytest.fixture
async def api(cass_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(cass_stack.base_url, KEY) as client:
        yield client


async def send(api: httpx.AsyncClient, conversation: str, **body: Any) -> list[Frame]:
    async with api.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        assert r.status_code == 200, await r.aread()
        got = await read_all(r)
    assert got[-1].event == "done", got[-1]
    return got


async def new_conversation(api: httpx.AsyncClient, title: str = "on cassandra") -> str:
    reply = await api.post("/v1/conversations", json={"title": title})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def test_a_turn_is_stored_and_paged_newest_first(api: httpx.AsyncClient, cass_stack: Stack) -> None:
    conversation = await new_conversation(api)
    frames = await send(api, conversation, content="Hello from Cassandra", model="demo")
    stored = await stored_messages(api, conversation, 2)
    assert [(m["role"], m["status"]) for m in stored] == [("assistant", "complete"), ("user", "complete")]
    assert stored[0]["content"] == text_of(frames) and stored[1]["content"] == "Hello from Cassandra"

    # 60 more messages written as the orchestrator writes them, a second apart: the newest 50
    # come first, the rest on the next page, nothing twice, nothing lost.
    history = HistoryClient(f"127.0.0.1:{cass_stack.history_port}")
    start = int(time.time() * 1000) + 1000
    try:
        for i in range(60):
            await history.append_message(USER, conversation, f"m{i:02d}", "user", f"message {i}", start + i * 1000)
    finally:
        await history.close()
    first = (await api.get(f"/v1/conversations/{conversation}/messages")).json()
    assert [m["id"] for m in first["data"]] == [f"m{i:02d}" for i in range(59, 9, -1)]
    assert first["next_cursor"]
    rest = (await api.get(f"/v1/conversations/{conversation}/messages", params={"before": first["next_cursor"]})).json()
    assert [m["id"] for m in rest["data"]][:10] == [f"m{i:02d}" for i in range(9, -1, -1)]
    assert [m["role"] for m in rest["data"][10:]] == ["assistant", "user"] and rest["next_cursor"] is None


async def test_rename_delete_and_lists(api: httpx.AsyncClient, cass_stack: Stack) -> None:
    kept, doomed = await new_conversation(api, "kept"), await new_conversation(api, "doomed")
    await send(api, doomed, content="bye", model="demo")
    assert len(await stored_messages(api, doomed, 2)) == 2
    renamed = await api.patch(f"/v1/conversations/{kept}", json={"title": "renamed on cassandra"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "renamed on cassandra"
    assert (await api.delete(f"/v1/conversations/{doomed}")).status_code == 204
    assert_error(await api.get(f"/v1/conversations/{doomed}/messages"), 404, "conversation_not_found")
    listed = (await api.get("/v1/conversations", params={"limit": 200})).json()["data"]
    ids = [c["id"] for c in listed]
    assert kept in ids and doomed not in ids
    assert next(c for c in listed if c["id"] == kept)["title"] == "renamed on cassandra"
    async with api_client(cass_stack.base_url, OTHER_KEY) as other:
        assert_error(await other.get(f"/v1/conversations/{kept}/messages"), 404, "conversation_not_found")


async def test_search_finds_titles_and_message_text_never_deleted_or_others(
    api: httpx.AsyncClient, cass_stack: Stack
) -> None:
    tag = "quokka" + uuid.uuid4().hex[:8]
    named = await new_conversation(api, f"All about {tag.upper()}")
    talked = await new_conversation(api, "a walk")
    await send(api, talked, content=f"Is the Große Straße near {tag}?", model="demo", client_message_id=f"q-{tag}")
    doomed = await new_conversation(api, f"{tag} too")
    assert (await api.delete(f"/v1/conversations/{doomed}")).status_code == 204
    await stored_messages(api, talked, 2)
    found = await api.get("/v1/conversations/search", params={"q": f"grosse strasse near {tag}"})
    assert found.status_code == 200, found.text
    # The demo answer quotes the question: the newest matching message is the answer.
    (hit,) = found.json()["data"]
    assert hit["conversation"]["id"] == talked and hit["message_id"] not in (None, f"q-{tag}")
    assert f"Große Straße near {tag}" in hit["snippet"]
    everything = (await api.get("/v1/conversations/search", params={"q": tag})).json()["data"]
    assert [h["conversation"]["id"] for h in everything] == [talked, named]
    assert everything[1]["message_id"] is None and everything[1]["snippet"] is None
    async with api_client(cass_stack.base_url, OTHER_KEY) as other:
        nothing = await other.get("/v1/conversations/search", params={"q": tag})
        assert nothing.status_code == 200 and nothing.json()["data"] == []


async def test_an_offline_client_syncs_what_it_missed(api: httpx.AsyncClient) -> None:
    async def drain(since: str) -> tuple[list[dict[str, Any]], str]:
        changes: list[dict[str, Any]] = []
        while True:
            body = (await api.get("/v1/sync", params={"since": since, "limit": 3})).json()
            changes += body["data"]
            since = body["next_cursor"] or since
            if not body["has_more"]:
                return changes, since

    _, cursor = await drain("")
    conversation = await new_conversation(api, "synced")
    frames = await send(api, conversation, content="sync me", model="demo", client_message_id="cass-sync-1")
    assert len(await stored_messages(api, conversation, 2)) == 2  # the answer is stored after the stream
    await api.patch(f"/v1/conversations/{conversation}", json={"title": "synced, renamed"})
    expected = [
        ("conversation.created", conversation),
        ("message.added", "cass-sync-1"),
        ("message.completed", frames[0].data["response_id"]),
        ("conversation.renamed", conversation),
    ]
    # Cassandra serves a change once it has settled (PARLEY_HISTORY_SYNC_SETTLE_MS).
    seen: list[dict[str, Any]] = []

    async def all_synced() -> bool:
        nonlocal cursor
        got, cursor = await drain(cursor)
        seen.extend(c for c in got if c["conversation_id"] == conversation)
        return len(seen) >= len(expected)

    await eventually(all_synced, SETTLE_MS / 1000 + 20, f"{len(expected)} changes synced", interval_s=0.5)
    assert [(c["type"], c.get("message", {}).get("id", c["conversation_id"])) for c in seen] == expected
    assert seen[0]["conversation"]["title"] == "synced, renamed"
    assert seen[2]["message"]["content"] == text_of(frames)


async def test_the_context_is_fetched_up_to_the_models_window(
    api: httpx.AsyncClient, cass_stack: Stack, fake: str
) -> None:
    conversation = await new_conversation(api, "long")
    history = HistoryClient(f"127.0.0.1:{cass_stack.history_port}")
    start = int(time.time() * 1000) - 10 * 60 * 1000
    try:
        for i in range(45):
            await history.append_message(
                USER, conversation, f"q{i:02d}", "user", f"Question {i:02d} about {i}?", start + i * 1000
            )
            await history.append_message(
                USER, conversation, f"a{i:02d}", "assistant", f"Answer {i:02d}.", start + i * 1000 + 1
            )
    finally:
        await history.close()
    async with httpx.AsyncClient(base_url=fake, timeout=10) as seen:
        await seen.delete("/_fake/requests")
        wide = await send(api, conversation, content="Sum it up.", model="wide")
        wide_prompt = (await provider_calls(seen))[0]["body"]["messages"]
        await seen.delete("/_fake/requests")
        small = await send(api, conversation, content="And the last?", model="small")
        small_prompt = (await provider_calls(seen))[0]["body"]["messages"]
    assert len(wide_prompt) == 1 + 90 + 1 and wide[0].data["dropped_messages"] == 0
    assert 0 < len(small_prompt) - 2 < 92 and small[0].data["dropped_messages"] > 0
    assert small_prompt[-2]["role"] == "assistant", "the newest turns, whole"


async def test_an_image_turn_reaches_the_provider_and_history(api: httpx.AsyncClient, fake: str) -> None:
    conversation = await new_conversation(api, "photo")
    upload = await api.post("/v1/media", files={"file": ("p.jpg", photo_jpeg(1600, 1200, 1), "image/jpeg")})
    assert upload.status_code == 201, upload.text
    async with httpx.AsyncClient(base_url=fake, timeout=10) as seen:
        await seen.delete("/_fake/requests")
        await send(api, conversation, content="What is this?", model="wide", media_ids=[upload.json()["id"]])
        sent = (await provider_calls(seen))[0]["body"]["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in sent), sent
    stored = await stored_messages(api, conversation, 2)
    assert stored[1]["content"] == "What is this?" and stored[0]["status"] == "complete"


async def test_cassandra_stopped_during_turns_then_back_keeps_every_answer_once(
    api: httpx.AsyncClient, cass_stack: Stack, cassandra: CassandraEndpoint
) -> None:
    """The node stops while turns stream and come in: history's readiness turns 503, a turn
    either completes or ends with a retryable error, and once the node is back every answer
    that completed is stored exactly once (its completion waited on the bus)."""
    node = cassandra.local
    if node is None:
        unavailable("cassandra", f"the session's Cassandra is {cassandra.source}, not ours to stop")
    conversations = [await new_conversation(api, f"outage {i}") for i in range(4)]
    for cid in conversations:  # the gateway has seen each one: the outage meets the turn itself
        await send(api, cid, content="before", model="demo")
    ready_url = f"http://127.0.0.1:{cass_stack.metrics_ports['history']}/readyz"
    async with httpx.AsyncClient(timeout=5) as probe:
        assert (await probe.get(ready_url)).status_code == 200

        outcomes: list[tuple[str, str, list[Frame] | int]] = []

        async def turns(cid: str, stop: asyncio.Event) -> None:
            i = 0
            while not stop.is_set():
                mid = f"{cid[-6:]}-{i}"
                async with api.stream(
                    "POST", f"/v1/conversations/{cid}/messages",
                    json={"content": f"turn {i}", "model": "demo", "client_message_id": mid},
                ) as r:  # fmt: skip
                    outcomes.append((cid, mid, await read_all(r) if r.status_code == 200 else r.status_code))
                i += 1
                await asyncio.sleep(0.2)  # a user's pace: a turn, then a moment

        def answered_since(start: int) -> Callable[[], Awaitable[bool]]:
            async def every_conversation_answered() -> bool:
                done = {cid for cid, _, f in outcomes[start:] if isinstance(f, list) and f and f[-1].event == "done"}
                return done == set(conversations)

            return every_conversation_answered

        stop = asyncio.Event()
        running_turns = [asyncio.create_task(turns(cid, stop)) for cid in conversations]
        await eventually(answered_since(0), 30, "turns answered before the outage")
        await asyncio.to_thread(node.stop)
        try:

            async def not_ready() -> bool:
                return (await probe.get(ready_url)).status_code == 503

            not_ready.__name__ = "history's readiness turns 503"
            await eventually(not_ready, timeout_s=30)
            body = (await probe.get(ready_url)).json()
            assert "store" in body["problems"], body
            await asyncio.sleep(3)  # the outage lasts a while: turns keep coming meanwhile
        finally:
            await asyncio.to_thread(node.start)

        async def ready() -> bool:
            return (await probe.get(ready_url)).status_code == 200

        ready.__name__ = "history ready again"
        await eventually(ready, timeout_s=60)
        await eventually(answered_since(len(outcomes)), 60, "turns answered after the outage")
        stop.set()
        await asyncio.gather(*running_turns)

    done = [(cid, mid, f) for cid, mid, f in outcomes if isinstance(f, list) and f and f[-1].event == "done"]
    failed = [(cid, mid, f) for cid, mid, f in outcomes if (cid, mid, f) not in done]
    assert done and failed, f"{len(done)} done, {len(failed)} failed: the outage met some turns"
    for _, _, got in failed:
        if isinstance(got, int):
            assert got == 503, got
        else:
            errors = [f for f in got if f.event == "error"]
            assert errors and errors[-1].data["retryable"] is True, [f.event for f in got]

    # Every answer that completed is stored once, after its question; nothing is stored twice.
    for cid in conversations:
        ours = [(mid, frames) for c, mid, frames in done if c == cid]

        async def settled(cid: str = cid, want: int = 2 + 2 * len(ours)) -> list[dict[str, Any]] | None:
            data = (await api.get(f"/v1/conversations/{cid}/messages", params={"limit": 200})).json()["data"]
            return data if len(data) >= want else None

        settled.__name__ = f"the answers of {cid} stored"
        stored = await eventually(settled, timeout_s=60)
        ids = [m["id"] for m in stored]
        assert len(ids) == len(set(ids)), "nothing stored twice"
        by_id = {m["id"]: m for m in stored}
        for mid, frames in ours:
            answer = by_id[frames[0].data["response_id"]]
            assert answer["content"] == text_of(frames) and answer["reply_to_id"] == mid
            assert by_id[mid]["content"].startswith("turn ")
