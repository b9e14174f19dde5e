"""The broker and Redis restarted under a running system: services reconnect, streams in
flight finish or end with a retryable error, new turns work, no user message is lost; an
answer whose completion the broker did not take (it went away just then) is stored all the same.

These restart the local servers (the machine's RabbitMQ and Redis); with testcontainers
they are skipped, since the containers are not ours to restart here. Every other test of the
session uses those servers too, so these are `serial`: `make test` runs them after the rest,
never beside it.
"""

from __future__ import annotations

import asyncio
import subprocess

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from parley_common.messaging.topology import RK_RESPONSE_COMPLETED, Topology
from parley_dev.infra import Infra, ensure_local, reachable, stop_local
from parley_dev.stack import Stack
from tests.support.api import stored_messages
from tests.support.polling import eventually
from tests.support.sse import Frame, frames, read_all, text_of

pytestmark = pytest.mark.serial


@pytest.fixture
def local_servers(infra: Infra) -> Infra:
    if infra.source != "local":
        pytest.skip("the servers are containers; restarting them is not wired")
    return infra


async def _turn_until(
    client: httpx.AsyncClient, conversation: str, content: str, started: asyncio.Event
) -> list[Frame]:
    out: list[Frame] = []
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": content}) as r:
        async for frame in frames(r):
            out.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in out) == 2:
                started.set()
            if frame.event in ("done", "error"):
                break
    return out


def _restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)


async def test_rabbitmq_restarted_mid_stream(
    local_servers: Infra, stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    started = asyncio.Event()
    turn = asyncio.create_task(_turn_until(client, conversation, "through a broker restart", started))
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.to_thread(_restart_rabbitmq)
    ended = await asyncio.wait_for(turn, 90)
    last = ended[-1]
    assert last.event == "done" or (last.event == "error" and last.data["retryable"]), last
    await stack.wait_ready(timeout_s=60)  # every consumer is back
    async with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": "after the restart"}
    ) as r:
        after = await read_all(r)
    assert after[-1].event == "done"
    stored = await stored_messages(client, conversation, 4, timeout_s=30)
    users = [m["content"] for m in stored if m["role"] == "user"]
    assert users == ["after the restart", "through a broker restart"], "no user message lost"


async def test_redis_restarted_mid_stream(
    local_servers: Infra, stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    started = asyncio.Event()
    turn = asyncio.create_task(_turn_until(client, conversation, "through a redis restart", started))
    await asyncio.wait_for(started.wait(), 30)
    stop_local(local_servers.redis_url)
    # While Redis is down: a clear, typed 503 (limits cannot be checked, so nothing is admitted).
    down = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "while down"})
    assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
    # Every service reports Redis down but stays ready: Redis is shared by every replica, so
    # turning them all unready would only make the edge answer 503 to everything (resumes of
    # answers already in flight included); the request that needs Redis gets the 503 above...
    still_ready = await client.get("/readyz")
    assert still_ready.status_code == 200 and still_ready.json()["dependencies"]["redis"] != "ok", still_ready.text
    for service in ("orchestrator", "provider-worker"):
        ops = await client.get(f"http://127.0.0.1:{stack.metrics_ports[service]}/readyz")
        assert ops.status_code == 200 and ops.json()["dependencies"]["redis"] != "ok", (service, ops.text)
        # ...and is alive: no restart for a dependency that is down.
        assert (await client.get(f"http://127.0.0.1:{stack.metrics_ports[service]}/healthz")).status_code == 200
    assert (await client.get("/healthz")).status_code == 200
    ended = await asyncio.wait_for(turn, 60)
    assert ended[-1].event == "done" or (ended[-1].event == "error" and ended[-1].data["retryable"]), ended[-1]
    await asyncio.to_thread(ensure_local, local_servers.redis_url)  # starts it and waits until it answers
    assert reachable(local_servers.redis_url)
    assert (await client.get("/readyz")).json()["dependencies"]["redis"] == "ok"
    # This Redis keeps nothing across a restart (no persistence): the replay log of the turn
    # that ran through it is gone, and a resume says so clearly instead of hanging.
    response_id = ended[0].data["response_id"]
    resumed = await client.get(f"/v1/responses/{response_id}/events", headers={"Last-Event-ID": "1"})
    assert resumed.status_code == 404 and resumed.json()["error"]["code"] == "response_not_found"
    async with client.stream(
        "POST", f"/v1/conversations/{conversation}/messages", json={"content": "redis is back"}
    ) as r:
        after = await read_all(r)
    assert after[-1].event == "done"
    stored = await stored_messages(client, conversation, 4, timeout_s=30)
    users = [m["content"] for m in stored if m["role"] == "user"]
    assert users == ["redis is back", "through a redis restart"]


async def test_an_answer_whose_completion_the_broker_refused_is_stored_when_its_job_comes_back(
    stack: Stack, client: httpx.AsyncClient, conversation: str
) -> None:
    """The worker streams the answer to its end, then its completion finds no queue (as when
    the broker goes away at that moment), so the job is handed back. When it comes back its
    stream has ended: the completion is published again from the replay log, and history
    stores the answer the user saw (the job used to be dropped as finished: the answer was lost)."""
    topology = Topology(stack.config.namespace)
    connection = await aio_pika.connect(stack.config.infra.amqp_url)
    try:
        channel = await connection.channel()
        events = await topology.declare_events_exchange(channel)
        takers = [
            await channel.declare_queue(q, passive=True)
            for q in (topology.history_completed_queue, topology.completions_queue)
        ]
        waiting_room = topology.retry_queue(topology.provider_queue("demo"))
        for queue in takers:
            await queue.unbind(events, RK_RESPONSE_COMPLETED)
        try:
            async with client.stream(
                "POST", f"/v1/conversations/{conversation}/messages", json={"content": "an answer nobody took"}
            ) as r:
                shown = await read_all(r)
            assert shown[-1].event == "done", shown[-1]

            async def job_handed_back() -> bool:
                # A channel per look: asking for a queue not declared yet closes its channel.
                async with connection.channel() as looking:
                    declared = await looking.declare_queue(waiting_room, passive=True)
                    return bool(declared.declaration_result.message_count)

            # The waiting room is declared when its first message is handed back.
            await eventually(
                job_handed_back, 20, "the job in its queue's waiting room", passing=(ChannelNotFoundEntity,)
            )
        finally:
            for queue in takers:
                await queue.bind(events, RK_RESPONSE_COMPLETED)
    finally:
        await connection.close()
    stored = await stored_messages(client, conversation, 2, timeout_s=30)
    assert [m["role"] for m in stored] == ["assistant", "user"]
    assert stored[0]["content"] == text_of(shown) and stored[0]["status"] == "complete", stored[0]
