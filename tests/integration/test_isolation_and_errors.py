"""What a client that is not allowed, or sends something wrong, gets: a 4xx JSON error with a code."""

from __future__ import annotations

import httpx
import pytest

from parley_dev.stack import Stack
from tests.support.api import assert_error
from tests.support.sse import read_all


async def test_another_user_gets_404_on_my_conversation(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, conversation: str
) -> None:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "secret"}) as r:
        response_id = r.headers["x-parley-response-id"]
        await read_all(r)
    assert_error(await bob.get(f"/v1/conversations/{conversation}"), 404, "conversation_not_found")
    assert_error(await bob.get(f"/v1/conversations/{conversation}/messages"), 404, "conversation_not_found")
    assert_error(
        await bob.post(f"/v1/conversations/{conversation}/messages", json={"content": "let me in"}),
        404,
        "conversation_not_found",
    )
    assert_error(await bob.get(f"/v1/responses/{response_id}/events"), 404, "response_not_found")
    assert conversation not in [c["id"] for c in (await bob.get("/v1/conversations")).json()["data"]]
    # And nothing bob tried landed in the conversation.
    mine = (await client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    assert "let me in" not in [m["content"] for m in mine]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"content": "unterminated', 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"content": "hi", "temperature": 2}', 400, "unknown_field"),
        (b"{}", 400, "missing_field"),
        (b'{"content": ""}', 400, "empty_content"),
        (b'{"content": "   \\n  "}', 400, "empty_content"),
        (b'{"content": "' + b"x" * 32_001 + b'"}', 413, "content_too_long"),
        (b'{"content": "' + b"x" * 1_100_000 + b'"}', 413, "payload_too_large"),
        (b'{"content": "hi", "client_message_id": "has spaces"}', 400, "invalid_request"),
        (b'{"content": "hi", "model": "no-such-model"}', 200, "unknown_model"),
    ],
)
async def test_bad_messages_get_a_typed_error(
    client: httpx.AsyncClient, conversation: str, body: bytes, status: int, code: str
) -> None:
    url = f"/v1/conversations/{conversation}/messages"
    headers = {"content-type": "application/json"}
    if status != 200:
        assert_error(await client.post(url, content=body, headers=headers), status, code)
        return
    # Errors found after the stream started arrive as an `error` event that ends it.
    async with client.stream("POST", url, content=body, headers=headers) as r:
        frames = await read_all(r)
    assert frames[-1].event == "error" and frames[-1].data["code"] == code
    assert frames[-1].data["retryable"] is False


async def test_missing_or_wrong_api_keys_get_401(stack: Stack, conversation: str) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        assert_error(await anonymous.get("/v1/conversations"), 401, "missing_api_key")
        assert_error(
            await anonymous.get("/v1/conversations", headers={"Authorization": "Bearer nope-nope-nope-nope"}),
            401,
            "invalid_api_key",
        )
        assert_error(
            await anonymous.post(
                f"/v1/conversations/{conversation}/messages",
                json={"content": "hi"},
                headers={"Authorization": "Basic dXNlcjpwYXNz"},
            ),
            401,
            "invalid_api_key",
        )


async def test_unknown_routes_and_bad_cursors(client: httpx.AsyncClient, conversation: str) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(await client.get("/v1/conversations", params={"cursor": "%%%"}), 400, "invalid_cursor")
    assert_error(
        await client.get(f"/v1/conversations/{conversation}/messages", params={"limit": 0}), 400, "invalid_request"
    )
    assert_error(await client.post("/v1/conversations", json={"title": "t" * 201}), 400, "too_long")
    assert_error(
        await client.get("/v1/responses/r_x/events", headers={"Last-Event-ID": "abc"}), 400, "invalid_last_event_id"
    )
