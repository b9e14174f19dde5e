"""A stream outlives its connection: resume from the replay log, on any gateway."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import httpx

from parley.v1 import history_pb2
from parley_common.context.prompt import DEFAULT_SYSTEM_PROMPT, build_prompt
from parley_dev.infra import free_port
from parley_dev.stack import Stack
from parley_worker.providers.demo import demo_answer
from tests.support.api import api_client, stored_messages
from tests.support.keys import DEV_KEY
from tests.support.sse import Frame, frames, read_all, text_of


async def test_a_client_that_drops_resumes_with_last_event_id(client: httpx.AsyncClient, conversation: str) -> None:
    seen = []
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "resume me"}) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            seen.append(frame)
            if len(seen) == 4:
                break  # the connection drops here
    last_id = seen[-1].id
    async with client.stream(
        "GET", f"/v1/responses/{response_id}/events", headers={"Last-Event-ID": str(last_id)}
    ) as r:
        assert r.status_code == 200
        rest = await read_all(r)
    assert rest[0].id == last_id + 1, "every frame after Last-Event-ID, none twice"
    ids = [f.id for f in seen + rest]
    assert ids == sorted(set(ids)), "ids only grow (merged deltas carry the id of their last frame)"
    assert rest[-1].event == "done"

    # The whole answer, read again from the start, is the same text.
    async with client.stream("GET", f"/v1/responses/{response_id}/events") as r:
        full = await read_all(r)
    assert text_of(full) == text_of(seen + rest)


async def extra_gateway(stack: Stack) -> int:
    """A second gateway of the stack, ready: its port (its process is `gateway@<port>`)."""
    port = free_port()
    stack.start_service("gateway", port=port)
    await stack.wait_ready(gateway_url=f"http://127.0.0.1:{port}")
    return port


async def resumed_elsewhere(stack: Stack, response_id: str, last_id: int) -> tuple[list[Frame], list[Frame]]:
    """Through the stack's own gateway: the answer's frames after `last_id`, and all of them."""
    async with api_client(stack.base_url, DEV_KEY) as other:
        async with other.stream(
            "GET", f"/v1/responses/{response_id}/events", headers={"Last-Event-ID": str(last_id)}
        ) as r:
            rest = await read_all(r)
        async with other.stream("GET", f"/v1/responses/{response_id}/events") as r:
            uninterrupted = await read_all(r)
    return rest, uninterrupted


async def test_a_gateway_that_stops_mid_stream_ends_it_and_another_gateway_resumes(
    stack: Stack, conversation: str
) -> None:
    port = await extra_gateway(stack)
    name = f"gateway@{port}"
    seen = []
    async with api_client(f"http://127.0.0.1:{port}", DEV_KEY) as doomed:
        async with doomed.stream(
            "POST", f"/v1/conversations/{conversation}/messages", json={"content": "survive a restart"}
        ) as r:
            response_id = r.headers["x-parley-response-id"]
            async for frame in frames(r):
                seen.append(frame)
                if len(seen) == 3:
                    stop = asyncio.create_task(asyncio.to_thread(stack.stop_service, name))
                if frame.event in ("done", "error"):
                    break
    assert await stop == 0
    final = seen[-1]
    assert final.event == "error" and final.data["code"] == "gateway_shutdown" and final.data["retryable"]
    assert final.id == seen[-2].id, "the gateway's own notice leaves Last-Event-ID on the last replay-log frame"
    last_id = max(f.id for f in seen if f.id is not None)

    rest, uninterrupted = await resumed_elsewhere(stack, response_id, last_id)
    assert rest[-1].event == "done"
    assert text_of([f for f in seen if f.id is not None] + rest) == text_of(uninterrupted)


async def test_a_gateway_killed_mid_stream_loses_nothing_a_second_gateway_resumes_exactly(
    stack: Stack, conversation: str
) -> None:
    port = await extra_gateway(stack)
    seen = []
    async with api_client(f"http://127.0.0.1:{port}", DEV_KEY) as doomed:
        try:
            async with doomed.stream(
                "POST", f"/v1/conversations/{conversation}/messages", json={"content": "kill the gateway"}
            ) as r:
                response_id = r.headers["x-parley-response-id"]
                async for frame in frames(r):
                    seen.append(frame)
                    if len(seen) == 3:
                        stack.kill_service(f"gateway@{port}")  # SIGKILL: no goodbye event
        except httpx.HTTPError:
            pass  # the connection died with the gateway
    assert seen and seen[-1].event != "done", "the stream should have been cut"
    last_id = max(f.id for f in seen if f.id is not None)
    rest, uninterrupted = await resumed_elsewhere(stack, response_id, last_id)
    assert rest[-1].event == "done"
    ids = [f.id for f in seen if f.id is not None] + [f.id for f in rest]
    assert ids == sorted(set(ids)), "no frame twice, in order"
    assert text_of([f for f in seen if f.id is not None] + rest) == text_of(uninterrupted)
    assert text_of(uninterrupted).startswith('You said: "kill the gateway".')


async def test_cancel_stops_the_answer_and_keeps_the_partial_text(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, conversation: str
) -> None:
    seen = []
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "stop me"}) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            seen.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in seen) == 3:
                assert (await bob.post(f"/v1/responses/{response_id}/cancel")).status_code == 404
                reply = await client.post(f"/v1/responses/{response_id}/cancel")
                assert reply.status_code == 202 and reply.json()["status"] == "cancelling"
            if frame.event in ("done", "error"):
                break
    assert seen[-1].event == "done" and seen[-1].data["finish_reason"] == "cancelled"
    partial = text_of(seen)
    full_length = len('You said: "stop me". ') + 60
    assert 0 < len(partial) < full_length
    stored = await stored_messages(client, conversation, 2)
    assert stored[0]["id"] == response_id and stored[0]["status"] == "interrupted"
    assert stored[0]["content"] == partial
    again = await client.post(f"/v1/responses/{response_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "finished"


async def _turn(
    client: httpx.AsyncClient, conversation: str, content: str, started: asyncio.Event | None = None, **extra: str
) -> list[Frame]:
    """One turn read to its end; `started` is set once two deltas have arrived."""
    out: list[Frame] = []
    async with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": content, **extra}
    ) as r:
        assert r.status_code == 200, await r.aread()
        async for frame in frames(r):
            out.append(frame)
            if started is not None and sum(f.event == "delta" for f in out) == 2:
                started.set()
            if frame.event in ("done", "error"):
                break
    return out


async def test_a_second_message_queues_behind_the_first_and_never_interleaves(
    client: httpx.AsyncClient, conversation: str
) -> None:
    streaming = asyncio.Event()
    first = asyncio.create_task(_turn(client, conversation, "first question", streaming))
    await streaming.wait()
    second = await _turn(client, conversation, "second question")
    first_frames = await first
    assert second[0].event == "queued"
    assert first_frames[-1].event == "done" and second[-1].event == "done"
    assert text_of(second).startswith('You said: "second question".')
    stored = await stored_messages(client, conversation, 4)
    assert [(m["role"], m["status"]) for m in reversed(stored)] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert [m["content"] for m in reversed(stored)][:3] == ["first question", text_of(first_frames), "second question"]


async def test_a_message_sent_right_after_an_answer_is_not_queued_and_sees_that_answer(
    client: httpx.AsyncClient, conversation: str
) -> None:
    first = await _turn(client, conversation, "first question")
    second = await _turn(client, conversation, "second question")
    assert first[-1].event == "done" and second[-1].event == "done"
    assert "queued" not in [f.event for f in second], "nothing was running: the client is not told to wait"
    stored = await stored_messages(client, conversation, 4)
    oldest_first = list(reversed(stored))
    assert [m["role"] for m in oldest_first] == ["user", "assistant", "user", "assistant"]
    assert oldest_first[1]["content"] == text_of(first)
    # The demo model's answer is a function of the whole prompt: the second answer is the one
    # for a prompt that holds the first question and its answer.
    prompt = build_prompt(
        DEFAULT_SYSTEM_PROMPT,
        [
            history_pb2.Message(role=m["role"], content=m["content"], status=history_pb2.MESSAGE_STATUS_COMPLETE)
            for m in stored[1:]
        ],
    )
    assert text_of(second) == demo_answer(prompt)


async def test_replace_cancels_the_running_answer_first(client: httpx.AsyncClient, conversation: str) -> None:
    streaming = asyncio.Event()
    first = asyncio.create_task(_turn(client, conversation, "a long story please", streaming))
    await streaming.wait()
    second = await _turn(client, conversation, "never mind", on_busy="replace")
    first_frames = await first
    assert first_frames[-1].event == "done" and first_frames[-1].data["finish_reason"] == "cancelled"
    assert second[-1].event == "done" and text_of(second).startswith('You said: "never mind".')
    stored = await stored_messages(client, conversation, 4)
    assert [(m["role"], m["status"]) for m in reversed(stored)] == [
        ("user", "complete"),
        ("assistant", "interrupted"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]


async def test_twelve_conversations_of_one_user_stream_at_once_each_its_own(client: httpx.AsyncClient) -> None:
    conversations = []
    for i in range(12):
        reply = await client.post("/v1/conversations", json={"title": f"parallel {i}"})
        conversations.append(reply.json()["id"])
    results = await asyncio.gather(*(_turn(client, c, f"topic number {i}") for i, c in enumerate(conversations)))
    for i, (conversation, frames_) in enumerate(zip(conversations, results, strict=True)):
        assert frames_[-1].event == "done"
        named = [f for f in frames_ if f.event != "delta"]  # a delta carries only its text
        assert {f.data["conversation_id"] for f in named} == {conversation}
        assert len({f.data["response_id"] for f in named}) == 1
        assert text_of(frames_).startswith(f'You said: "topic number {i}".')


async def test_too_many_streams_at_once_get_429_and_rate_limit_headers(stack: Stack, client: httpx.AsyncClient) -> None:
    port = free_port()
    name = f"gateway@{port}"
    # A user of its own: request counts are shared by every gateway, per user and minute.
    carol_key = "pk_test_carol_" + secrets.token_urlsafe(16)
    stack.start_service(
        "gateway",
        port=port,
        PARLEY_MAX_STREAMS_PER_USER="2",
        PARLEY_REQUESTS_PER_MINUTE="40",
        PARLEY_API_KEYS=json.dumps({"carol": carol_key}),
    )
    try:
        await stack.wait_ready(gateway_url=f"http://127.0.0.1:{port}")
        headers = {"Authorization": f"Bearer {carol_key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as limited:
            conversations = [(await limited.post("/v1/conversations", json={})).json()["id"] for _ in range(3)]
            started = [asyncio.Event(), asyncio.Event()]
            running = [
                asyncio.create_task(_turn(limited, c, "keep a slot", e))
                for c, e in zip(conversations[:2], started, strict=True)
            ]
            await asyncio.gather(*(e.wait() for e in started))
            reply = await limited.post(f"/v1/conversations/{conversations[2]}/messages", json={"content": "one more"})
            assert reply.status_code == 429 and reply.json()["error"]["code"] == "too_many_streams"
            await asyncio.gather(*running)
            # The slots come back when the answers finish.
            assert (await _turn(limited, conversations[2], "now there is room"))[-1].event == "done"

            listing = await limited.get("/v1/conversations")
            if int(listing.headers["x-ratelimit-reset"]) - time.time() < 5:
                # Too close to the next one-minute window: wait it out, start the count there.
                await asyncio.sleep(int(listing.headers["x-ratelimit-reset"]) - time.time() + 0.2)
                listing = await limited.get("/v1/conversations")
            assert listing.headers["x-ratelimit-limit"] == "40"
            remaining = int(listing.headers["x-ratelimit-remaining"])
            statuses = [(await limited.get("/v1/conversations")).status_code for _ in range(remaining + 1)]
            assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    finally:
        stack.stop_service(name)
