"""Parley on a three-node RabbitMQ cluster, while the node leading its queues dies.

Every service gets all three nodes' URLs (PARLEY_AMQP_URL, comma-separated) and connects to
one of them. The requests and provider queues are quorum queues led by node A. A steady
stream of turns runs while node A is killed (SIGKILL): services connected to it reconnect
to another node, declare and consume again; the queues elect new leaders and lose nothing.
Every turn completes, or ends with a retryable error that a resend completes; no answer is
stored twice; no message is left on any queue and nothing is dead-lettered. Then node A
comes back and rejoins.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import pytest

from parley_common.messaging.topology import Topology
from parley_dev.infra import Infra
from parley_dev.rabbit_cluster import RabbitCluster
from parley_dev.stack import Stack, StackConfig, running
from tests.support.api import api_client
from tests.support.keys import DEV_KEY
from tests.support.polling import eventually
from tests.support.sse import read_all, text_of

WRITERS = 3


@dataclass
class Writer:
    """One user's conversation, sent turn after turn, each turn resent until it completes."""

    conversation: str
    completed: list[str] = field(default_factory=list)  # response ids, in order
    answers: dict[str, str] = field(default_factory=dict)  # response id -> text streamed
    retryable_errors: list[str] = field(default_factory=list)
    other_failures: list[str] = field(default_factory=list)

    async def turn(self, client: httpx.AsyncClient, content: str) -> None:
        for attempt in range(20):
            message_id = f"m{uuid.uuid4().hex[:12]}"
            try:
                async with client.stream(
                    "POST",
                    f"/v1/conversations/{self.conversation}/messages",
                    json={"content": content, "client_message_id": message_id},
                ) as response:
                    if response.status_code in (502, 503, 504):
                        self.retryable_errors.append(f"HTTP {response.status_code}")
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    assert response.status_code == 200, await response.aread()
                    response_id = response.headers["x-parley-response-id"]
                    frames = await read_all(response)
            except httpx.TransportError as exc:
                self.other_failures.append(f"transport: {exc!r}")
                await asyncio.sleep(0.2)
                continue
            last = frames[-1]
            if last.event == "done":
                self.completed.append(response_id)
                self.answers[response_id] = text_of(frames)
                return
            if last.event == "error" and last.data.get("retryable"):
                self.retryable_errors.append(last.data["code"])
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            self.other_failures.append(f"{last.event}: {last.data}")
            return
        self.other_failures.append(f"{content!r} never completed")


@pytest.fixture(scope="module")
async def cluster_stack(
    rabbit_cluster: RabbitCluster, infra: Infra, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, RabbitCluster]]:
    namespace = "cl" + uuid.uuid4().hex[:10]
    topology = Topology(namespace)
    # Declared first through node A: a quorum queue's leader starts on the node its declaring
    # client is connected to, so node A leads both queues the turns go through.
    leader = rabbit_cluster.nodes[0]
    connection = await aio_pika.connect(rabbit_cluster.url_of(leader))
    channel = await connection.channel()
    await topology.declare_requests_queue(channel)
    await topology.declare_provider_queue(channel, "demo")
    await connection.close()
    config = StackConfig(
        infra=Infra(amqp_url=rabbit_cluster.url, redis_url=infra.redis_url, source="local"),
        namespace=namespace,
        workdir=Path(tmp_path_factory.mktemp("cluster-stack")),
        dev_api_key=DEV_KEY,
        keeps_s3_data=False,
        extra_env={
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "50",
            "PARLEY_DEMO_TOKENS_PER_S": "40",
            "PARLEY_HEARTBEAT_S": "1",
            "PARLEY_REQUESTS_PER_MINUTE": "100000",
        },
    )
    try:
        async with running(config) as stack:
            yield stack, rabbit_cluster
    finally:
        await asyncio.to_thread(rabbit_cluster.restore)


async def until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """`condition` (a blocking call: it runs in a thread) holds within `timeout_s`."""
    await eventually(lambda: asyncio.to_thread(condition), timeout_s, what, interval_s=0.5)


async def test_turns_go_on_while_the_node_leading_the_queues_is_killed(
    cluster_stack: tuple[Stack, RabbitCluster],
) -> None:
    stack, cluster = cluster_stack
    topology = Topology(stack.config.namespace)
    node_a = cluster.nodes[0]
    assert cluster.leader_of(topology.requests_queue) == node_a
    assert cluster.leader_of(topology.provider_queue("demo")) == node_a
    assert len(cluster.members_of(topology.requests_queue)) == 3
    async with api_client(stack.base_url, DEV_KEY, 60.0) as client:
        writers = []
        for i in range(WRITERS):
            created = await client.post("/v1/conversations", json={"title": f"writer {i}"})
            writers.append(Writer(created.json()["id"]))
        phase = {"name": "before"}
        sent: dict[str, int] = {}

        async def write(writer: Writer, stop: asyncio.Event) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                await writer.turn(client, f"{phase['name']} turn {n}")
            sent[writer.conversation] = n

        stop = asyncio.Event()
        tasks = [asyncio.create_task(write(w, stop)) for w in writers]
        try:
            await until(lambda: all(w.completed for w in writers), 60, "turns complete before the kill")

            phase["name"] = "during"
            await asyncio.to_thread(cluster.kill, node_a)
            await until(lambda: cluster.leader_of(topology.requests_queue) != node_a, 60, "a new requests leader")
            await until(lambda: cluster.leader_of(topology.provider_queue("demo")) != node_a, 60, "a new jobs leader")
            after_kill = sum(len(w.completed) for w in writers)
            await until(
                lambda: sum(len(w.completed) for w in writers) >= after_kill + 3 * WRITERS,
                90,
                "turns go on with node A gone",
            )

            phase["name"] = "rejoined"
            await asyncio.to_thread(cluster.start, node_a)
            assert sorted(cluster.running_nodes()) == sorted(cluster.nodes)
            rejoined = sum(len(w.completed) for w in writers)
            await until(lambda: sum(len(w.completed) for w in writers) >= rejoined + WRITERS, 60, "turns after rejoin")
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            failures = [f for w in writers for f in w.other_failures]
            print("retryable errors:", [e for w in writers for e in w.retryable_errors], "failures:", failures)

        for writer in writers:
            assert not writer.other_failures, writer.other_failures
            assert len(writer.completed) == sent[writer.conversation], "every turn completed"
            # History: each completed answer exactly once, with exactly what the client saw.
            stored: list[dict] = []
            cursor = ""
            while True:
                page = await client.get(
                    f"/v1/conversations/{writer.conversation}/messages", params={"limit": 200, "before": cursor}
                )
                body = page.json()
                stored.extend(body["data"])
                cursor = body.get("next_cursor") or ""
                if not cursor:
                    break
            answers = [m for m in stored if m["role"] == "assistant"]
            ids = [m["id"] for m in answers]
            assert len(ids) == len(set(ids)), "no answer is stored twice"
            by_id = {m["id"]: m for m in answers}
            for response_id in writer.completed:
                assert by_id[response_id]["content"] == writer.answers[response_id]
                assert by_id[response_id]["status"] == "complete"

    # Nothing left on any of this namespace's queues, nothing dead-lettered.
    def drained() -> bool:
        depths = cluster.queue_depths()
        return all(n == 0 for name, n in depths.items() if name.startswith(stack.config.namespace + "."))

    await until(drained, 30, "every queue drained")
    depths = cluster.queue_depths()
    assert depths.get(topology.dead_letter_queue, 0) == 0
    for queue in (topology.requests_queue, topology.provider_queue("demo")):
        assert len(cluster.online_members_of(queue)) == 3, "node A is a member again"
