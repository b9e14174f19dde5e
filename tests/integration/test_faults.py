"""Faults the system survives: poison messages, a provider worker killed mid-answer or before it."""

from __future__ import annotations

import aio_pika
import httpx
from redis.asyncio import Redis

from parley.v1 import chat_pb2
from parley_common.messaging.topology import CHAT_REQUEST, PROVIDER_JOB, RESPONSE_COMPLETED, SCHEMA_VERSION, Topology
from parley_dev.stack import Stack
from tests.support.api import stored_messages
from tests.support.polling import eventually
from tests.support.sse import frames, read_all, text_of


async def dead_letters(connection: aio_pika.abc.AbstractConnection, queue: str, want: int) -> list[dict]:
    """The headers of the first `want` dead letters (waiting up to 10 s for them)."""
    channel = await connection.channel()
    dlq = await channel.declare_queue(queue, passive=True)
    found: list[dict] = []

    async def all_found() -> bool:
        message = await dlq.get(fail=False, no_ack=True)
        if message is not None:
            found.append(dict(message.headers or {}))
        return len(found) >= want

    try:
        await eventually(all_found, 10, f"{want} dead letters in {queue}")
    finally:
        await channel.close()
    return found


async def test_poison_messages_go_to_the_dead_letter_queue_with_the_reason(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    topology = Topology(stack.config.namespace)
    connection = await aio_pika.connect(stack.config.infra.amqp_url)
    try:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b"\xff not protobuf", type=PROVIDER_JOB, headers={"x-schema-version": SCHEMA_VERSION}),
            routing_key=topology.provider_queue("demo"),
        )
        await channel.default_exchange.publish(
            aio_pika.Message(
                chat_pb2.ResponseCompleted(response_id="r_x").SerializeToString(),
                type=RESPONSE_COMPLETED,
                headers={"x-schema-version": 99},
            ),
            routing_key=topology.history_completed_queue,
        )
        await channel.default_exchange.publish(
            aio_pika.Message(b"\x00\x01 garbage", type=CHAT_REQUEST, headers={"x-schema-version": SCHEMA_VERSION}),
            routing_key=topology.requests_queue,
        )
        buried = await dead_letters(connection, topology.dead_letter_queue, 3)
    finally:
        await connection.close()
    reasons = {h["x-parley-source-queue"]: h["x-parley-dead-reason"] for h in buried}
    assert "schema version 99" in reasons[topology.history_completed_queue]
    assert "undecodable" in reasons[topology.provider_queue("demo")]
    assert "undecodable" in reasons[topology.requests_queue], "a chat request the orchestrator cannot read"
    # The consumers are alive and well.
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "still ok"}) as r:
        assert (await read_all(r))[-1].event == "done"


async def job_leases(stack: Stack, response_id: str) -> list[bytes]:
    """The leases a provider worker holds on the response's job (one while it works on it)."""
    redis = Redis.from_url(stack.config.infra.redis_url)
    try:
        return [key async for key in redis.scan_iter(f"{stack.config.namespace}:job-lease:{response_id}:*")]
    finally:
        await redis.aclose()


async def _restart_worker(stack: Stack, **overrides: str) -> None:
    stack.start_service("provider-worker", PARLEY_WORKER_LEASE_S="2", **overrides)
    await stack.wait_ready()


async def test_a_worker_killed_after_tokens_were_shown_is_replaced_and_the_answer_goes_on(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    # The demo model can go on from a partial answer: the restarted worker takes the job over
    # from the text shown (test_worker_takeover.py: every wire format, a second worker running,
    # and a model that cannot continue).
    stack.stop_service("provider-worker")
    await _restart_worker(stack)
    seen = []
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "die now"}) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            seen.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in seen) == 3:
                stack.kill_service("provider-worker")
                await _restart_worker(stack)
            if frame.event in ("done", "error"):
                break
    assert seen[-1].event == "done" and not [f for f in seen if f.event == "error"]
    shown = text_of(seen)
    assert shown.startswith('You said: "die now".')

    async def settled() -> dict | None:
        stored = await stored_messages(client, conversation, 2)
        answer = next(m for m in stored if m["id"] == response_id)
        return answer if answer["status"] != "streaming" else None

    answer = await eventually(settled, 10, "the answer stored once it ended")
    assert answer["status"] == "complete" and answer["content"] == shown, "no text repeated, none lost"


async def test_a_worker_killed_before_the_first_token_has_its_job_redelivered_and_answered_once(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    stack.stop_service("provider-worker")
    await _restart_worker(stack, PARLEY_DEMO_FIRST_TOKEN_DELAY_MS="3000")
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "survive me"}) as r:
        response_id = r.headers["x-parley-response-id"]
        await eventually(lambda: job_leases(stack, response_id), 30, "the worker holding the job")
        # Killed while it waits for its first token: only a redelivery of the job can answer.
        stack.kill_service("provider-worker")
        await _restart_worker(stack)
        frames_ = await read_all(r)
    assert frames_[-1].event == "done"
    assert text_of(frames_).startswith('You said: "survive me".')
    stored = await stored_messages(client, conversation, 2)
    assert [m["role"] for m in stored] == ["assistant", "user"], "answered exactly once"
