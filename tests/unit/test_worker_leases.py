"""Job leases on a real Redis (leases.py): every lease a worker holds is renewed by one task, in
one round trip, for as long as it is held; a lease that lapsed meanwhile is taken again unless
another worker holds it; a released lease is gone at once and the renewer stops."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from parley_worker.leases import JobLease


async def test_leases_held_together_outlive_their_ttl_and_are_gone_once_released(redis: Redis) -> None:
    lease = JobLease(redis, "t" + uuid.uuid4().hex[:10], ttl_s=0.3)
    other = JobLease(redis, lease.namespace, ttl_s=0.3)
    first, second = lease.key("r1", 0), lease.key("r2", 0)
    assert await lease.try_acquire("r1", 0) and await lease.try_acquire("r2", 0)
    release_first = asyncio.Event()

    async def hold(response_id: str, until: asyncio.Event) -> None:
        async with lease.held(response_id, 0):
            await until.wait()

    release_second = asyncio.Event()
    tasks = [
        asyncio.create_task(hold("r1", release_first)),
        asyncio.create_task(hold("r2", release_second)),
    ]
    await asyncio.sleep(1.0)  # three TTLs
    assert await redis.get(first) == lease.holder.encode() and await redis.get(second) == lease.holder.encode()
    assert not await other.try_acquire("r1", 0), "a lease held and renewed cannot be taken"

    # Lapsed while this worker was busy: taken again at the next round, as no one else took it.
    await redis.delete(first)
    await asyncio.sleep(0.25)
    assert await redis.get(first) == lease.holder.encode()

    release_first.set()
    await tasks[0]
    assert await redis.exists(first) == 0, "released at once"
    await asyncio.sleep(0.5)
    assert await redis.exists(first) == 0, "never set again once released"
    assert await redis.get(second) == lease.holder.encode()

    release_second.set()
    await tasks[1]
    assert await redis.exists(second) == 0
    await asyncio.sleep(0.2)
    assert lease._renewer is not None and lease._renewer.done(), "the renewer stops when nothing is held"


async def test_a_lapsed_lease_another_worker_took_is_left_to_it(redis: Redis) -> None:
    lease = JobLease(redis, "t" + uuid.uuid4().hex[:10], ttl_s=0.3)
    other = JobLease(redis, lease.namespace, ttl_s=5)
    assert await lease.try_acquire("r1", 0)
    stop = asyncio.Event()

    async def hold() -> None:
        async with lease.held("r1", 0):
            await stop.wait()

    task = asyncio.create_task(hold())
    await redis.delete(lease.key("r1", 0))
    assert await other.try_acquire("r1", 0)
    await asyncio.sleep(0.4)
    assert await redis.get(lease.key("r1", 0)) == other.holder.encode()
    stop.set()
    await task
