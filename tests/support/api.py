"""Requests and checks over the public HTTP API, as a client makes them, and what the fake
provider server and the response cache hold."""

from __future__ import annotations

from typing import Any

import httpx
from redis.asyncio import Redis

from parley_dev.stack import Stack

from .polling import eventually
from .sse import read_all


def api_client(base_url: str, key: str, timeout_s: float = 30.0) -> httpx.AsyncClient:
    """An HTTP client signed in with the API key `key`."""
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)


def assert_error(reply: httpx.Response, status: int, code: str) -> None:
    """A typed JSON error: the status, the `error.code`, and no traceback."""
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["error"]["code"] == code, body
    assert "Traceback" not in reply.text


async def stored_messages(
    client: httpx.AsyncClient, conversation: str, want: int, timeout_s: float = 10.0
) -> list[dict[str, Any]]:
    """The conversation's messages in history (newest first) once it holds at least `want`
    (an answer is stored from the bus, just after its stream ends)."""

    async def enough() -> list[dict[str, Any]] | None:
        reply = await client.get(f"/v1/conversations/{conversation}/messages")
        assert reply.status_code == 200, reply.text
        data: list[dict[str, Any]] = reply.json()["data"]
        return data if len(data) >= want else None

    return await eventually(enough, timeout_s, f"{conversation} holding {want} messages")


async def stored_message(
    client: httpx.AsyncClient,
    conversation: str,
    message_id: str,
    statuses: tuple[str, ...] = (),
    timeout_s: float = 20.0,
    finish_reason: str = "",
) -> dict[str, Any]:
    """The message as history holds it, once it is there (with one of `statuses` and that
    `finish_reason`, if given: a continued answer is "complete" before and after)."""

    async def found() -> dict[str, Any] | None:
        reply = await client.get(f"/v1/conversations/{conversation}/messages")
        assert reply.status_code == 200, reply.text
        message = next((m for m in reply.json()["data"] if m["id"] == message_id), None)
        if message is None or (statuses and message["status"] not in statuses):
            return None
        return message if not finish_reason or message["finish_reason"] == finish_reason else None

    wanted = " ".join(filter(None, ("/".join(statuses), finish_reason)))
    return await eventually(found, timeout_s, f"{message_id} stored {wanted}".rstrip())


async def complete_turn(api: httpx.AsyncClient, conversation_id: str, content: str, **extra: Any) -> None:
    """Send a message and read its whole answer."""
    async with api.stream(
        "POST", f"/v1/conversations/{conversation_id}/messages", json={"content": content, **extra}
    ) as reply:
        assert reply.status_code == 200, await reply.aread()
        await read_all(reply)


async def saved_answer(api: httpx.AsyncClient, conversation_id: str, status: str = "complete") -> dict[str, Any]:
    """The newest assistant message in history, once it is saved with `status`."""

    async def check() -> dict[str, Any] | None:
        reply = await api.get(f"/v1/conversations/{conversation_id}/messages", params={"limit": 5})
        if reply.status_code == 503:
            return None  # a dependency is restarting or busy: ask again
        reply.raise_for_status()
        answers = [m for m in reply.json()["data"] if m["role"] == "assistant"]
        return answers[0] if answers and answers[0]["status"] == status else None

    return await eventually(check, what=f"a saved {status} answer in {conversation_id}")


async def provider_calls(seen: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every call the fake provider received since the test began, oldest first."""
    return list((await seen.get("/_fake/requests")).json())


async def cache_entries(stack: Stack) -> int:
    """How many answers the stack's response cache holds."""
    redis = Redis.from_url(stack.config.infra.redis_url)
    try:
        return len([k async for k in redis.scan_iter(f"{stack.config.namespace}:response-cache:*")])
    finally:
        await redis.aclose()
