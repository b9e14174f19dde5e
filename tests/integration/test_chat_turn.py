"""One chat turn end to end: HTTP in, RabbitMQ, orchestrator, history gRPC, worker, SSE out."""

from __future__ import annotations

import re

import httpx
from redis.asyncio import Redis

from parley_dev.stack import Stack
from tests.support.api import stored_messages
from tests.support.sse import read_all, text_of


async def test_a_message_streams_an_answer_and_both_land_in_history(
    client: httpx.AsyncClient, conversation: str
) -> None:
    async with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": "Hello, Parley!"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        response_id = response.headers["x-parley-response-id"]
        frames = await read_all(response)

    kinds = [f.event for f in frames]
    assert kinds[0] == "meta" and kinds[-1] == "done" and "usage" in kinds
    assert kinds.count("delta") > 5, "the answer should arrive token by token"
    ids = [f.id for f in frames]
    assert ids[0] == 1 and ids == sorted(set(ids)), "ids start at 1 and only grow"
    # Every frame but a delta names its response and conversation; a delta carries only its text.
    named = [f for f in frames if f.event != "delta"]
    assert all(f.data["response_id"] == response_id and f.data["conversation_id"] == conversation for f in named)
    assert all(set(f.data) == {"text"} for f in frames if f.event == "delta")
    answer = text_of(frames)
    assert answer.startswith('You said: "Hello, Parley!".')
    usage = next(f.data for f in frames if f.event == "usage")
    # The demo model counts words as tokens (deltas may carry several when they come fast).
    assert usage["output_tokens"] == len(re.findall(r"\s*\S+", answer))

    stored = await stored_messages(client, conversation, 2)
    assert [m["role"] for m in stored] == ["assistant", "user"]
    assert stored[0]["content"] == answer and stored[0]["status"] == "complete"
    assert stored[0]["id"] == response_id and stored[0]["reply_to_id"] == stored[1]["id"]
    assert stored[1]["content"] == "Hello, Parley!"

    listed = (await client.get("/v1/conversations")).json()["data"]
    assert conversation in [c["id"] for c in listed]


async def test_the_second_turn_sees_the_first(client: httpx.AsyncClient, conversation: str) -> None:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "one"}) as r:
        first = text_of(await read_all(r))
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "one"}) as r:
        second = text_of(await read_all(r))
    # The demo answer is derived from the whole prompt: the same words with history differ.
    assert first.startswith('You said: "one".') and second.startswith('You said: "one".')
    assert first != second
    stored = await stored_messages(client, conversation, 4)
    assert [m["role"] for m in stored] == ["assistant", "user", "assistant", "user"]


async def test_sending_the_same_client_message_id_again_makes_no_second_message(
    client: httpx.AsyncClient, conversation: str
) -> None:
    body = {"content": "only once please", "client_message_id": "client-msg-1"}
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        first_id = r.headers["x-parley-response-id"]
        first = await read_all(r)
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        second_id = r.headers["x-parley-response-id"]
        second = await read_all(r)
    assert first_id == second_id
    assert text_of(second) == text_of(first) and second[-1].event == "done"
    # A later message is recorded after anything the repeat could have made (turns of one
    # conversation are recorded in order), so once its answer is in, a duplicate would show.
    later = {"content": "and then this", "client_message_id": "client-msg-2"}
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=later) as r:
        later_id = r.headers["x-parley-response-id"]
        assert (await read_all(r))[-1].event == "done"
    stored = await stored_messages(client, conversation, 4)
    assert [m["id"] for m in stored] == [later_id, "client-msg-2", first_id, "client-msg-1"]


async def test_message_history_pages_backwards(client: httpx.AsyncClient, conversation: str) -> None:
    for i in range(3):
        async with client.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": f"msg {i}"}
        ) as r:
            await read_all(r)
    await stored_messages(client, conversation, 6)
    seen, cursor = [], None
    while True:
        params = {"limit": 4} | ({"before": cursor} if cursor else {})
        page = (await client.get(f"/v1/conversations/{conversation}/messages", params=params)).json()
        seen += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 6 and len({m["id"] for m in seen}) == 6
    assert [m["content"] for m in seen if m["role"] == "user"] == ["msg 2", "msg 1", "msg 0"]


async def test_the_same_message_after_its_stream_expired_gets_the_stored_answer(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    body = {"content": "remember me", "client_message_id": "client-msg-expired"}
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        response_id = r.headers["x-parley-response-id"]
        first = text_of(await read_all(r))
    await stored_messages(client, conversation, 2)
    # What the TTLs do after an hour: the replay log and the response's owner record are gone.
    redis = Redis.from_url(stack.config.infra.redis_url)
    ns = stack.config.namespace
    assert await redis.delete(f"{ns}:replay:{response_id}", f"{ns}:response-owner:{response_id}") == 2
    await redis.aclose()

    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as r:
        again = await read_all(r)
    assert [f.event for f in again] == ["meta", "delta", "usage", "done"]
    assert text_of(again) == first
    stored = (await client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    assert [m["id"] for m in stored] == [response_id, "client-msg-expired"]
