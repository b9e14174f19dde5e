"""What the bus does with a message no consumer can get through, on the real broker.

- A message that keeps stopping its consumer (delivered, never acknowledged, delivered again
  after every restart) is dead-lettered by the broker itself once it has come back
  DELIVERY_LIMIT times (a quorum queue counts deliveries), with the reason in `x-death`.
- A handler that fails has its message tried again from the queue's waiting room (no
  prefetch slot held meanwhile), and after MAX_ATTEMPTS the message is buried with the reason.
- A handler that cannot go on for a reason that is not the message's (its store is down) has
  it tried again for as long as that lasts, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from parley.v1 import chat_pb2
from parley_common.messaging.amqp import envelope
from parley_common.messaging.bus import MAX_ATTEMPTS, Consumers, DeadLetters, Retry
from parley_common.messaging.topology import DELIVERY_LIMIT, RESPONSE_COMPLETED, Topology
from parley_common.service.lifecycle import InFlight
from parley_dev.infra import Infra
from tests.support.polling import eventually


@pytest.fixture
async def connection(infra: Infra) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(infra.amqp_url)
    yield connection
    await connection.close()


@pytest.fixture
async def topology(connection: AbstractRobustConnection) -> AsyncIterator[Topology]:
    topology = Topology("rd" + uuid.uuid4().hex[:10])
    yield topology
    channel = await connection.channel()
    for name in topology.durable_queues([]):
        await channel.queue_delete(name)


async def dead_letter(connection: AbstractRobustConnection, topology: Topology) -> AbstractIncomingMessage:
    channel = await connection.channel()
    queue = await topology.declare_dead_letter_queue(channel)
    message = await eventually(lambda: queue.get(fail=False), 15, "a message in the dead-letter queue")
    await message.ack()
    return message


def completed(response_id: str) -> aio_pika.Message:
    event = chat_pb2.ResponseCompleted(response_id=response_id, conversation_id="c", content="hi")
    return envelope(event, message_type=RESPONSE_COMPLETED, idempotency_key=response_id)


async def test_a_message_that_keeps_stopping_its_consumer_is_dead_lettered_by_the_broker(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    setup = await connection.channel()
    await topology.declare_dead_letter_queue(setup)
    queue = await topology.declare_requests_queue(setup)
    await setup.default_exchange.publish(aio_pika.Message(b"job", message_id="r_crashy"), routing_key=queue.name)
    deliveries = 0
    while deliveries <= DELIVERY_LIMIT + 2:
        # A consumer that takes the message and dies before acknowledging it: its channel goes.
        channel = await connection.channel()
        message = await (await channel.get_queue(queue.name)).get(timeout=5, fail=False)
        await channel.close()
        if message is None:
            break
        deliveries += 1
    # Handed back (unacked) DELIVERY_LIMIT times, each a redelivery: then never again.
    assert deliveries == DELIVERY_LIMIT + 1
    dead = await dead_letter(connection, topology)
    assert dead.body == b"job"
    death = dead.headers["x-death"][0]
    assert death["reason"] == "delivery_limit" and death["queue"] == topology.requests_queue
    assert await (await setup.get_queue(queue.name)).get(fail=False) is None, "gone from its queue"


async def test_a_failing_handler_is_retried_from_the_waiting_room_then_buried_with_the_reason(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    consume = await connection.channel()
    confirmed = await connection.channel(publisher_confirms=True)
    seen: list[tuple[str, float, Any]] = []

    async def failing(event: chat_pb2.ResponseCompleted, message: AbstractIncomingMessage) -> None:
        seen.append((event.response_id, time.monotonic(), message.headers.get("x-parley-attempts")))
        raise RuntimeError("redis is down")

    consumers = Consumers(DeadLetters(confirmed, topology), InFlight())
    queue = await topology.declare_completions_queue(consume)
    await consumers.subscribe(queue, chat_pb2.ResponseCompleted, RESPONSE_COMPLETED, failing, "test.failing")
    await confirmed.default_exchange.publish(completed("r_fails"), routing_key=queue.name)
    dead = await dead_letter(connection, topology)
    await consumers.stop()
    assert [s[0] for s in seen] == ["r_fails"] * MAX_ATTEMPTS
    assert [s[2] for s in seen] == [None, 1, 2, 3, 4], "each try knows how many came before"
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.9, f"tried again after the waiting room's delay, not at once: {gaps}"
    assert dead.headers["x-parley-dead-reason"] == f"failed {MAX_ATTEMPTS} times; last: RuntimeError: redis is down"
    assert dead.headers["x-parley-source-queue"] == queue.name


async def test_a_message_waits_for_as_long_as_its_store_is_down_and_is_never_buried(
    connection: AbstractRobustConnection, topology: Topology
) -> None:
    consume = await connection.channel()
    confirmed = await connection.channel(publisher_confirms=True)
    tries: list[str] = []
    stored = asyncio.Event()
    down_for = MAX_ATTEMPTS + 2

    async def store(event: chat_pb2.ResponseCompleted, message: AbstractIncomingMessage) -> None:
        tries.append(event.response_id)
        if len(tries) <= down_for:
            raise Retry("history store unavailable", counted=False)
        stored.set()

    in_flight = InFlight()
    consumers = Consumers(DeadLetters(confirmed, topology), in_flight)
    queue = await topology.declare_history_completed_queue(consume)
    await consumers.subscribe(queue, chat_pb2.ResponseCompleted, RESPONSE_COMPLETED, store, "test.store")
    await confirmed.default_exchange.publish(completed("r_waits"), routing_key=queue.name)
    await asyncio.wait_for(stored.wait(), 30)
    await consumers.stop()
    assert len(tries) == down_for + 1, "stored on the first try after the store came back"
    assert in_flight.count == 0
    check = await connection.channel()
    dlq = await topology.declare_dead_letter_queue(check)
    assert await dlq.get(fail=False) is None, "nothing was dead-lettered"
    for name in (queue.name, topology.retry_queue(queue.name)):
        assert await (await check.get_queue(name)).get(fail=False) is None, f"{name} is empty"
