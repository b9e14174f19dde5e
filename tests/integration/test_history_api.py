"""Rename, delete and sync over HTTP, as a client sees them; and never across users."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import assert_error, stored_messages
from tests.support.sse import read_all, text_of

JSON = {"content-type": "application/json"}


async def drain_sync(client: httpx.AsyncClient, since: str = "", limit: int = 200) -> tuple[list[dict[str, Any]], str]:
    """Every change after `since`, following next_cursor while has_more; and the cursor to keep."""
    changes: list[dict[str, Any]] = []
    for _ in range(1000):
        reply = await client.get("/v1/sync", params={"since": since, "limit": limit})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        changes += body["data"]
        since = body["next_cursor"] or since
        if not body["has_more"]:
            return changes, since
    raise AssertionError("sync never reached the end")


async def create(client: httpx.AsyncClient, title: str) -> str:
    reply = await client.post("/v1/conversations", json={"title": title})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def test_an_offline_client_syncs_exactly_what_it_missed(client: httpx.AsyncClient) -> None:
    _, cursor = await drain_sync(client)  # the client is up to date, then goes offline

    kept = await create(client, "draft")
    async with client.stream(
        "POST", f"/v1/conversations/{kept}/messages", json={"content": "sync me", "client_message_id": "sync-msg-1"}
    ) as r:
        response_id = r.headers["x-parley-response-id"]
        answer = text_of(await read_all(r))
    assert len(await stored_messages(client, kept, 2)) == 2
    renamed = await client.patch(f"/v1/conversations/{kept}", json={"title": "renamed"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "renamed" and renamed.json()["id"] == kept
    dropped = await create(client, "short-lived")
    gone = await client.delete(f"/v1/conversations/{dropped}")
    assert gone.status_code == 204 and gone.content == b""

    # Back online, in pages of two; other tests' late answers may be in the log: keep ours.
    missed, cursor2 = await drain_sync(client, cursor, limit=2)
    ours = [c for c in missed if c["conversation_id"] in (kept, dropped)]
    assert [(c["type"], c.get("message", {}).get("id", c["conversation_id"])) for c in ours] == [
        ("conversation.created", kept),
        ("message.added", "sync-msg-1"),
        ("message.completed", response_id),
        ("conversation.renamed", kept),
        ("conversation.deleted", dropped),
    ]
    assert ours[0]["conversation"]["title"] == "renamed", "an entity comes as it is now"
    assert ours[1]["message"]["content"] == "sync me" and ours[1]["message"]["role"] == "user"
    assert ours[2]["message"]["content"] == answer and ours[2]["message"]["status"] == "complete"
    assert "conversation" not in ours[4] and "message" not in ours[4]
    times = [c["changed_at_ms"] for c in missed]
    assert times == sorted(times)

    again, cursor3 = await drain_sync(client, cursor2)
    assert [c for c in again if c["conversation_id"] in (kept, dropped)] == []
    assert cursor3 == cursor2 or again, "nothing new: the cursor stays"


async def test_a_deleted_conversation_is_404_and_gone_from_lists(client: httpx.AsyncClient) -> None:
    doomed = await create(client, "doomed")
    async with client.stream("POST", f"/v1/conversations/{doomed}/messages", json={"content": "bye"}) as r:
        await read_all(r)
    assert len(await stored_messages(client, doomed, 2)) == 2
    assert (await client.delete(f"/v1/conversations/{doomed}")).status_code == 204

    assert_error(await client.get(f"/v1/conversations/{doomed}"), 404, "conversation_not_found")
    assert_error(await client.get(f"/v1/conversations/{doomed}/messages"), 404, "conversation_not_found")
    assert_error(await client.patch(f"/v1/conversations/{doomed}", json={"title": "x"}), 404, "conversation_not_found")
    assert_error(await client.delete(f"/v1/conversations/{doomed}"), 404, "conversation_not_found")
    assert_error(
        await client.post(f"/v1/conversations/{doomed}/messages", json={"content": "hello?"}),
        404,
        "conversation_not_found",
    )
    listed, cursor = [], None
    while True:
        page = await client.get("/v1/conversations", params={"limit": 200} | ({"cursor": cursor} if cursor else {}))
        listed += [c["id"] for c in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert doomed not in listed


async def test_bob_cannot_rename_delete_or_sync_devs_conversations(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, conversation: str
) -> None:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "mine"}) as r:
        await read_all(r)
    # The gateway just saw this conversation to be dev's: that says nothing about bob.
    sent = await bob.post(f"/v1/conversations/{conversation}/messages", json={"content": "let me in"})
    assert_error(sent, 404, "conversation_not_found")
    renamed = await bob.patch(f"/v1/conversations/{conversation}", json={"title": "bob's"})
    assert_error(renamed, 404, "conversation_not_found")
    assert_error(await bob.delete(f"/v1/conversations/{conversation}"), 404, "conversation_not_found")
    bobs, _ = await drain_sync(bob)
    assert conversation not in {c["conversation_id"] for c in bobs}
    assert "mine" not in str(bobs)
    still = (await client.get(f"/v1/conversations/{conversation}")).json()
    assert still["title"] == "test"
    devs, _ = await drain_sync(client)
    assert conversation in {c["conversation_id"] for c in devs}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("PATCH", "/v1/conversations/{cid}", {"json": {"title": "t" * 201}}, 400, "too_long"),
        ("PATCH", "/v1/conversations/{cid}", {"json": {}}, 400, "missing_field"),
        ("PATCH", "/v1/conversations/{cid}", {"json": {"title": "x", "pinned": True}}, 400, "unknown_field"),
        ("PATCH", "/v1/conversations/{cid}", {"content": b"{not json", "headers": JSON}, 400, "invalid_json"),
        ("PATCH", "/v1/conversations/c_nope", {"json": {"title": "x"}}, 404, "conversation_not_found"),
        ("DELETE", "/v1/conversations/c_nope", {}, 404, "conversation_not_found"),
        ("DELETE", "/v1/conversations/" + "x" * 129, {}, 400, "too_long"),
        ("GET", "/v1/sync", {"params": {"since": "%%%"}}, 400, "invalid_cursor"),
        ("GET", "/v1/sync", {"params": {"since": "YQ"}}, 400, "invalid_cursor"),
        ("GET", "/v1/sync", {"params": {"since": "a" * 513}}, 400, "too_long"),
        ("GET", "/v1/sync", {"params": {"limit": 0}}, 400, "invalid_request"),
        ("GET", "/v1/sync", {"params": {"limit": 201}}, 400, "invalid_request"),
    ],
)
async def test_bad_history_requests_get_a_typed_error(
    client: httpx.AsyncClient,
    conversation: str,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    reply = await client.request(method, path.format(cid=conversation), **kwargs)
    assert_error(reply, status, code)


async def test_sync_needs_an_api_key(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/sync", headers={"Authorization": ""}), 401, "missing_api_key")
