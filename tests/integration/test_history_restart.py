"""The history service dies (SIGKILL) and comes back during a chat turn: nothing is lost,
nothing is stored twice (the answer waits on the bus; persisting it is idempotent)."""

from __future__ import annotations

import uuid
from typing import Any

import aio_pika
import httpx
import pytest

from parley_common.messaging.topology import Topology
from parley_dev.stack import Stack
from tests.support.polling import eventually
from tests.support.sse import frames, read_all, text_of


async def completions_waiting(stack: Stack) -> int:
    """Completion events not yet persisted (ready or held unacked by a consumer)."""
    topology = Topology(stack.config.namespace)
    connection = await aio_pika.connect(stack.config.infra.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.history_completed_queue, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0)
    finally:
        await connection.close()


async def restart_history(stack: Stack) -> None:
    stack.start_service("history")
    await stack.wait_ready()  # history SERVING on gRPC health (asked by wait_ready itself)


async def a_turn_works(client: httpx.AsyncClient) -> None:
    """After the outage: poll until a whole new turn succeeds (every client reconnected)."""
    reply = await client.post("/v1/conversations", json={"title": "after the outage"})
    conversation = reply.json()["id"]

    async def turn() -> bool:
        async with client.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": "still there?"}
        ) as r:
            if r.status_code != 200:
                return False
            return (await read_all(r))[-1].event == "done"

    turn.__name__ = "a new turn completes"
    await eventually(turn, interval_s=0.5)


@pytest.mark.parametrize("kill_at", ["delta", "done"])
async def test_history_killed_during_a_turn_keeps_it_exactly_once(
    stack: Stack, client: httpx.AsyncClient, conversation: str, kill_at: str
) -> None:
    client_message_id = f"outage-{kill_at}-{uuid.uuid4().hex[:8]}"
    seen = []
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation}/messages",
        json={"content": "survive the history outage", "client_message_id": client_message_id},
    ) as r:
        assert r.status_code == 200
        response_id = r.headers["x-parley-response-id"]
        killed = False
        async for frame in frames(r):
            seen.append(frame)
            # mid-answer, or just as the answer is handed to history for persisting
            if not killed and frame.event == kill_at and (kill_at == "done" or len(seen) >= 4):
                stack.kill_service("history")
                killed = True
            if frame.event in ("done", "error"):
                break
    assert killed and seen[-1].event == "done", "the stream does not need history once it runs"
    answer = text_of(seen)

    await restart_history(stack)

    async def persisted() -> list[dict[str, Any]] | None:
        reply = await client.get(f"/v1/conversations/{conversation}/messages")
        data: list[dict[str, Any]] = reply.json()["data"] if reply.status_code == 200 else []
        return data if len(data) >= 2 and await completions_waiting(stack) == 0 else None

    stored = await eventually(persisted)
    assert [m["id"] for m in stored] == [response_id, client_message_id]
    assert stored[0]["content"] == answer and stored[0]["status"] == "complete"
    assert stored[1]["content"] == "survive the history outage"
    await a_turn_works(client)
    again = (await client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    assert [m["id"] for m in again] == [response_id, client_message_id], "nothing arrived twice"


async def test_a_message_sent_while_history_is_down_is_refused_then_stored_once(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    body = {"content": "are you there?", "client_message_id": "outage-retry-" + uuid.uuid4().hex[:8]}
    stack.kill_service("history")
    try:
        refused = await client.post(f"/v1/conversations/{conversation}/messages", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] in ("unavailable", "store_unavailable")
    finally:
        await restart_history(stack)

    async def sent() -> list[Any] | None:
        async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
            return await read_all(r) if r.status_code == 200 else None

    first = await eventually(sent, interval_s=0.5)
    assert first[-1].event == "done"
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        repeated = await read_all(r)
    assert text_of(repeated) == text_of(first)

    async def both() -> list[dict[str, Any]] | None:
        data: list[dict[str, Any]] = (await client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
        return data if len(data) >= 2 and await completions_waiting(stack) == 0 else None

    stored = await eventually(both)
    assert [m["id"] for m in stored][1:] == [body["client_message_id"]] and len(stored) == 2
    await a_turn_works(client)
