"""A job lease: which worker is streaming a response right now.

The running worker holds a short-lived Redis key and renews it every third of its TTL; a
worker that dies lets it lapse. A second delivery of the same job (a duplicate publish, or a
redelivery after a crash) can so tell "someone is streaming this" from "whoever streamed this
is gone" within one TTL (PARLEY_WORKER_LEASE_S, 1.5 s by default), and the worker that takes
the job over goes on with the answer (see consumers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

# Queues a caller's commands on a pipeline (their replies are the caller's to read).
Queue = Callable[[Pipeline], object]


class JobLease:
    def __init__(self, redis: Redis, namespace: str, ttl_s: float = 1.5) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_ms = int(ttl_s * 1000)
        self.holder = uuid.uuid4().hex
        # Per lease held here (`held`): commands sent with its release, in the same round trip.
        self._on_release: dict[str, list[Queue]] = {}

    def key(self, response_id: str, attempt: int) -> str:
        return f"{self.namespace}:job-lease:{response_id}:{attempt}"

    async def try_acquire(self, response_id: str, attempt: int) -> bool:
        return bool(await self.redis.set(self.key(response_id, attempt), self.holder, px=self.ttl_ms, nx=True))

    async def try_acquire_reading(self, response_id: str, attempt: int, reads: Queue) -> tuple[bool, list[Any]]:
        """`try_acquire`, with the commands `reads` queues sent in the same round trip (after
        the SET, so they see what the lease's previous holder left): acquired, and their replies."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key(response_id, attempt), self.holder, px=self.ttl_ms, nx=True)
            reads(pipe)
            acquired, *replies = await pipe.execute()
        return bool(acquired), replies

    def release_with(self, response_id: str, attempt: int, queue: Queue) -> bool:
        """Send the commands `queue` queues with this lease's release, at the end of `held`, in
        one round trip; False when this worker does not hold the lease now (nothing queued)."""
        pending = self._on_release.get(self.key(response_id, attempt))
        if pending is None:
            return False
        pending.append(queue)
        return True

    async def wait_acquire(self, response_id: str, attempt: int) -> bool:
        """Acquire, waiting once for a lapsed holder's lease to expire."""
        if await self.try_acquire(response_id, attempt):
            return True
        remaining = await self.redis.pttl(self.key(response_id, attempt))
        if remaining > 0:
            await asyncio.sleep(remaining / 1000 + 0.05)
        return await self.try_acquire(response_id, attempt)

    @contextlib.asynccontextmanager
    async def held(self, response_id: str, attempt: int) -> AsyncIterator[None]:
        """Renew the lease while the body runs; release it afterwards, with what the body
        queued to go with it (`release_with`)."""
        key = self.key(response_id, attempt)
        pending: list[Queue] = []
        self._on_release[key] = pending

        done = asyncio.Event()

        async def renew() -> None:
            # Stopped by the event, not only by cancel(): redis-py can lose a cancel that lands
            # inside a command (seen under load), and the loop must still end.
            while not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), self.ttl_ms / 3000)
                if not done.is_set() and not await self.redis.pexpire(key, self.ttl_ms):
                    # Lapsed while this worker was busy (a long pause of its loop): held again
                    # unless another worker took it meanwhile.
                    await self.redis.set(key, self.holder, px=self.ttl_ms, nx=True)

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            done.set()
            task.cancel()
            # Bounded: the job never waits on a renewal stuck in a Redis call.
            await asyncio.wait([task], timeout=1.0)
            self._on_release.pop(key, None)
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in pending:
                    queue(pipe)
                pipe.delete(key)
                await pipe.execute()
