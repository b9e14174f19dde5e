"""Searching conversations over HTTP, as the web client's search box does: by title and by
message text, case-insensitively, newest first, only the user's own and never a deleted one."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from parley_common.clients.history import HistoryClient
from parley_common.errors import InvalidRequest
from parley_dev.stack import Stack
from tests.support.api import stored_messages
from tests.support.sse import read_all

SEARCH = "/v1/conversations/search"


def assert_error(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["error"]["code"] == code, reply.text


async def create(client: httpx.AsyncClient, title: str) -> str:
    reply = await client.post("/v1/conversations", json={"title": title})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def say(client: httpx.AsyncClient, conversation: str, content: str, message_id: str) -> str:
    """A turn, to its end; the answer's id. (The demo model's answer quotes the message.)"""
    body = {"content": content, "client_message_id": message_id}
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as reply:
        assert reply.status_code == 200
        assert (await read_all(reply))[-1].event == "done"
        return reply.headers["x-parley-response-id"]


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> list[dict[str, Any]]:
    reply = await client.get(SEARCH, params={"q": q, **params})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["data"])


async def test_a_user_finds_their_conversations_by_title_and_by_message_text(
    client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    tag = "okapi" + uuid.uuid4().hex[:8]
    by_title = await create(client, f"Notes on the {tag.upper()}")
    by_text = await create(client, "a trip")
    answer = await say(client, by_text, f"Where is the Hauptstraße of {tag}?", f"search-{tag}-1")
    await say(client, by_text, "and a museum?", f"search-{tag}-2")
    await stored_messages(client, by_text, 4)
    doomed = await create(client, f"{tag} plans")
    await say(client, doomed, f"more about {tag}", f"search-{tag}-3")
    bobs = await create(bob, "bob's")
    await say(bob, bobs, f"bob also writes {tag}", f"search-{tag}-4")

    assert (await client.delete(f"/v1/conversations/{doomed}")).status_code == 204
    hits = await search(client, tag.upper())
    # Newest activity first: the conversation just talked in, then the one named earlier; the
    # deleted one and bob's are not there.
    assert [h["conversation"]["id"] for h in hits] == [by_text, by_title]
    text_hit, title_hit = hits
    listed = (await client.get(f"/v1/conversations/{by_text}")).json()
    assert set(text_hit["conversation"]) == set(listed)
    assert text_hit["conversation"]["title"] == "a trip"
    # The newest message that holds it: the answer quoting the question (not the later turn).
    assert text_hit["message_id"] == answer
    assert f'"Where is the Hauptstraße of {tag}?"' in text_hit["snippet"]
    assert len(text_hit["snippet"]) <= 160
    assert title_hit["conversation"]["title"] == f"Notes on the {tag.upper()}"
    assert title_hit["message_id"] is None and title_hit["snippet"] is None

    # Folding is Unicode's: "STRASSE" finds "Straße"; a limit keeps the newest.
    assert [h["message_id"] for h in await search(client, f"hauptSTRASSE OF {tag}")] == [answer]
    assert [h["conversation"]["id"] for h in await search(client, tag, limit=1)] == [by_text]

    # Bob finds his own, and nothing of dev's, whatever he asks.
    assert [h["conversation"]["id"] for h in await search(bob, tag)] == [bobs]
    assert await search(bob, "Hauptstraße of " + tag) == []
    assert await search(bob, f"Notes on the {tag}") == []


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({}, "missing_field"),
        ({"q": ""}, "too_short"),
        ({"q": " \t "}, "too_short"),
        ({"q": "x" * 201}, "too_long"),
        ({"q": " " * 400 + "x" * 201}, "too_long"),
        ({"q": "x" * 1001}, "too_long"),
        ({"q": "tax", "limit": 0}, "invalid_request"),
        ({"q": "tax", "limit": 51}, "invalid_request"),
        ({"q": "tax", "limit": "many"}, "invalid_request"),
    ],
)
async def test_a_bad_search_is_a_400_with_a_code(client: httpx.AsyncClient, params: dict[str, Any], code: str) -> None:
    # (Also: "search" is never taken for a conversation id, which would be a 404.)
    assert_error(await client.get(SEARCH, params=params), 400, code)


async def test_search_text_is_trimmed_and_200_characters_are_allowed(client: httpx.AsyncClient) -> None:
    tag = "tapir" + uuid.uuid4().hex[:8]
    long_title = tag + "y" * (200 - len(tag))
    named = await create(client, long_title)
    assert [h["conversation"]["id"] for h in await search(client, f"  {long_title}\n", limit=50)] == [named]


async def test_search_needs_an_api_key_and_is_in_the_openapi_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30.0) as anyone:
        assert_error(await anyone.get(SEARCH, params={"q": "x"}), 401, "missing_api_key")
        document = (await anyone.get("/openapi.json")).json()
    operation = document["paths"][SEARCH]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"q", "limit"}


async def test_the_history_service_refuses_an_empty_query_over_grpc(stack: Stack) -> None:
    history = HistoryClient(f"127.0.0.1:{stack.history_port}")
    user = "grpc-search-" + uuid.uuid4().hex[:8]
    try:
        named = await history.create_conversation(user, "Ünïcode TITLE")
        found = await history.search_conversations(user, "  ünïcode title ", 1000)
        assert [(h.conversation.id, h.conversation.user_id) for h in found.hits] == [(named.id, user)]
        with pytest.raises(InvalidRequest) as refused:
            await history.search_conversations(user, " \n ")
        assert refused.value.code == "invalid_query"
    finally:
        await history.close()
