"""A stream outlives its connection: resume from the replay log, on any gateway."""

from __future__ import annotations

import asyncio

import httpx

from parley_dev.infra import free_port
from parley_dev.stack import Stack

from .conftest import DEV_KEY
from .sse import frames, read_all, text_of


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
    assert [f.id for f in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    assert rest[-1].event == "done"

    # The whole answer, read again from the start, is the same text.
    async with client.stream("GET", f"/v1/responses/{response_id}/events") as r:
        full = await read_all(r)
    assert text_of(full) == text_of(seen + rest)


async def test_a_gateway_that_stops_mid_stream_ends_it_and_another_gateway_resumes(
    stack: Stack, conversation: str
) -> None:
    port = free_port()
    name = f"gateway@{port}"
    stack.start_service("gateway", port=port)
    await stack.wait_ready(gateway_url=f"http://127.0.0.1:{port}")
    headers = {"Authorization": f"Bearer {DEV_KEY}"}
    seen = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as doomed:
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
    assert final.id is None, "the gateway's own notice is not a replay-log frame"
    last_id = max(f.id for f in seen if f.id is not None)

    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as other:
        async with other.stream(
            "GET", f"/v1/responses/{response_id}/events", headers={"Last-Event-ID": str(last_id)}
        ) as r:
            rest = await read_all(r)
        async with other.stream("GET", f"/v1/responses/{response_id}/events") as r:
            uninterrupted = await read_all(r)
    assert rest[-1].event == "done"
    assert text_of([f for f in seen if f.id is not None] + rest) == text_of(uninterrupted)
