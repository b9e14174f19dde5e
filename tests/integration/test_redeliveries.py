"""A message that keeps stopping its consumer (it is delivered, never acknowledged, delivered
again after every restart) is counted on the real broker's redeliveries and, past the limit,
goes to the dead-letter queue with the reason instead of looping forever."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from redis.asyncio import Redis

from parley_common.dead_letters import DeadLetters, Deliveries
from parley_common.topology import Topology
from parley_dev.infra import Infra


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[Redis]:
    client = Redis.from_url(infra.redis_url)
    yield client
    await client.aclose()


async def test_a_message_that_keeps_stopping_its_consumer_is_buried_after_five_deliveries(
    infra: Infra, redis: Redis
) -> None:
    namespace = "rd" + uuid.uuid4().hex[:10]
    topology = Topology(namespace)
    deliveries = Deliveries(redis, namespace, max_deliveries=5)
    queue_name = f"{namespace}.work"
    connection = await aio_pika.connect(infra.amqp_url)
    try:
        setup = await connection.channel()
        await setup.declare_queue(queue_name, auto_delete=False)
        await setup.default_exchange.publish(aio_pika.Message(b"job", message_id="r_crashy"), routing_key=queue_name)
        seen = []
        for _ in range(6):
            # A consumer that takes the message and dies before acknowledging it: its channel goes.
            channel = await connection.channel()
            queue = await channel.get_queue(queue_name)
            message = await queue.get(timeout=10, no_ack=False)
            assert message is not None
            seen.append(await deliveries.exceeded(message))
            if seen[-1] is not None:
                confirmed = await connection.channel(publisher_confirms=True)
                await DeadLetters(confirmed, topology).bury(message, queue_name, f"delivered {seen[-1]} times")
                await channel.close()
                break
            await channel.close()
        assert seen == [None, None, None, None, None, 6], "the first five deliveries are handled, the sixth is not"
        check = await connection.channel()
        assert await (await check.get_queue(queue_name)).get(fail=False) is None, "it is gone from its queue"
        dead = await (await check.get_queue(topology.dead_letter_queue)).get(timeout=10)
        assert dead.body == b"job" and dead.headers["x-parley-dead-reason"] == "delivered 6 times"
        await dead.ack()
        await check.queue_delete(queue_name)
        await check.queue_delete(topology.dead_letter_queue)
    finally:
        await connection.close()
        await redis.delete(f"{namespace}:deliveries:r_crashy")


async def test_a_first_delivery_costs_no_redis_call(infra: Infra) -> None:
    # Redis at a closed port: a first delivery never asks it, a redelivery is handled anyway.
    unreachable = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    deliveries = Deliveries(unreachable, "rd-none")
    connection = await aio_pika.connect(infra.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"x", message_id="m1"), routing_key=queue.name)
        first = await queue.get(timeout=10, no_ack=False)
        assert not first.redelivered and await deliveries.exceeded(first) is None
        await first.reject(requeue=True)
        again = await queue.get(timeout=10, no_ack=False)
        assert again.redelivered and await deliveries.exceeded(again) is None, "Redis down: handled, not buried"
        await again.ack()
    finally:
        await connection.close()
        await unreachable.aclose()
