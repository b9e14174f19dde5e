"""The three-node RabbitMQ cluster that the failover tests run on: it forms, it keeps a replica
of a quorum queue on every node, and a message it confirmed outlives the node that led its queue
(whether that node crashes or stops), served by the others, and the node returns and rejoins."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import aio_pika
import pytest

from parley_dev.rabbit_cluster import RabbitCluster, RabbitCommandFailed
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

T = TypeVar("T")
# What a node that is electing a leader, booting or rejoining may answer for a moment.
PASSING = (RabbitCommandFailed, aio_pika.exceptions.AMQPError, OSError, TimeoutError)


async def settles(check: Callable[[], Awaitable[T]], accept: Callable[[T], bool], what: str) -> T:
    """The first answer of `check` that `accept` takes (60 s at most); the accepted answer."""

    async def accepted() -> tuple[T] | None:
        answer = await check()
        return (answer,) if accept(answer) else None

    (answer,) = await eventually(accepted, 60.0, what, interval_s=0.25, passing=PASSING)
    return answer


@pytest.fixture
async def queue(rabbit_cluster: RabbitCluster) -> AsyncIterator[str]:
    """A fresh queue name; afterwards every node runs again and the queue is deleted."""
    name = "cluster-test." + uuid.uuid4().hex[:10]
    yield name
    await asyncio.to_thread(rabbit_cluster.restore)
    connection = await aio_pika.connect(rabbit_cluster.urls[0])
    async with connection:
        await (await connection.channel()).queue_delete(name)


async def declare_quorum_queue(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        await (await connection.channel()).declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def publish_confirmed(url: str, queue: str, body: bytes) -> None:
    """Publish a persistent message and return once the broker confirmed it (for a quorum queue:
    once a majority of its replicas hold it)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)


async def take_one(url: str, queue: str) -> bytes | None:
    """The next message of `queue` through the node at `url`, acknowledged; None when it is empty."""
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        message = await (await channel.get_queue(queue)).get(timeout=10, fail=False)
        if message is None:
            return None
        await message.ack()
        return message.body


async def test_three_nodes_run_as_one_cluster(rabbit_cluster: RabbitCluster, queue: str) -> None:
    nodes = rabbit_cluster.nodes
    assert len(nodes) == 3 and len(set(rabbit_cluster.urls)) == 3
    assert rabbit_cluster.url == ",".join(rabbit_cluster.urls)
    assert await asyncio.to_thread(rabbit_cluster.running_nodes) == sorted(nodes)
    # One broker, not three: a queue declared through one node takes a message published through
    # another and hands it out through the third.
    first, second, third = rabbit_cluster.urls
    await declare_quorum_queue(first, queue)
    await publish_confirmed(second, queue, b"across the cluster")
    assert await take_one(third, queue) == b"across the cluster"


async def test_a_quorum_queue_has_a_replica_on_every_node(rabbit_cluster: RabbitCluster, queue: str) -> None:
    await declare_quorum_queue(rabbit_cluster.urls[1], queue)
    nodes = sorted(rabbit_cluster.nodes)
    assert await asyncio.to_thread(rabbit_cluster.members_of, queue) == nodes
    assert await asyncio.to_thread(rabbit_cluster.online_members_of, queue) == nodes
    assert await asyncio.to_thread(rabbit_cluster.leader_of, queue) in nodes
    await publish_confirmed(rabbit_cluster.urls[0], queue, b"one")
    await settles(lambda: asyncio.to_thread(rabbit_cluster.queue_depths), lambda d: d.get(queue) == 1, "a depth of 1")
    assert await take_one(rabbit_cluster.urls[2], queue) == b"one"
    await settles(lambda: asyncio.to_thread(rabbit_cluster.queue_depths), lambda d: d.get(queue) == 0, "a depth of 0")


async def test_a_confirmed_message_outlives_the_killed_leader_of_its_queue(
    rabbit_cluster: RabbitCluster, queue: str
) -> None:
    await declare_quorum_queue(rabbit_cluster.urls[0], queue)
    await publish_confirmed(rabbit_cluster.urls[0], queue, b"before the crash")
    leader = await asyncio.to_thread(rabbit_cluster.leader_of, queue)

    await asyncio.to_thread(rabbit_cluster.kill, leader)
    assert not rabbit_cluster.running(leader)
    survivors = sorted(node for node in rabbit_cluster.nodes if node != leader)
    survivor_url = rabbit_cluster.url_of(survivors[0])
    body = await settles(lambda: take_one(survivor_url, queue), lambda b: b is not None, "the message")
    assert body == b"before the crash"
    await settles(lambda: asyncio.to_thread(rabbit_cluster.leader_of, queue), lambda n: n in survivors, "a new leader")
    assert await asyncio.to_thread(rabbit_cluster.online_members_of, queue) == survivors

    await asyncio.to_thread(rabbit_cluster.start, leader)
    nodes = sorted(rabbit_cluster.nodes)
    assert await asyncio.to_thread(rabbit_cluster.running_nodes) == nodes
    assert await asyncio.to_thread(rabbit_cluster.members_of, queue) == nodes
    await settles(
        lambda: asyncio.to_thread(rabbit_cluster.online_members_of, queue), lambda m: m == nodes, "3 replicas online"
    )
    # Taken once means taken: not handed out again, through the returned node either.
    assert await take_one(rabbit_cluster.url_of(leader), queue) is None


async def test_a_stopped_node_leaves_its_queue_working_and_serves_it_again_when_it_returns(
    rabbit_cluster: RabbitCluster, queue: str
) -> None:
    await declare_quorum_queue(rabbit_cluster.urls[0], queue)
    leader = await asyncio.to_thread(rabbit_cluster.leader_of, queue)
    await asyncio.to_thread(rabbit_cluster.stop, leader)
    survivors = sorted(node for node in rabbit_cluster.nodes if node != leader)
    await settles(
        lambda: asyncio.to_thread(rabbit_cluster.running_nodes), lambda n: n == survivors, "two nodes running"
    )
    # Two of three replicas are a majority: the queue takes and confirms messages meanwhile.
    await publish_confirmed(rabbit_cluster.url_of(survivors[0]), queue, b"while it was away")
    assert await asyncio.to_thread(rabbit_cluster.leader_of, queue) in survivors

    await asyncio.to_thread(rabbit_cluster.start, leader)
    # A client of the returned node gets what was written while it was down.
    assert await take_one(rabbit_cluster.url_of(leader), queue) == b"while it was away"
