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
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

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
        # The one task renewing every lease held here, and the round of it in flight (its end,
        # the leases it renews).
        self._renewer: asyncio.Task[None] | None = None
        self._renewing: tuple[asyncio.Future[None], frozenset[str]] | None = None

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
        queued to go with it (`release_with`).

        Every lease this worker holds is renewed by one task, in one round trip every third of
        the TTL (`_renew_all`): no task, timer or Redis call of its own per job."""
        key = self.key(response_id, attempt)
        pending: list[Queue] = []
        self._on_release[key] = pending
        renewer = self._renewer
        if renewer is None or renewer.done() or renewer.get_loop() is not asyncio.get_running_loop():
            self._renewer = asyncio.create_task(self._renew_all())
        try:
            yield
        finally:
            self._on_release.pop(key, None)
            renewing = self._renewing
            if renewing is not None and key in renewing[1]:
                # A renewal of this lease is in flight (it may set a lapsed lease again): the
                # release goes after it. Bounded: the job never waits on a renewal stuck in Redis.
                await asyncio.wait([renewing[0]], timeout=1.0)
            async with self.redis.pipeline(transaction=False) as pipe:
                for queue in pending:
                    queue(pipe)
                pipe.delete(key)
                await pipe.execute()

    async def _renew_all(self) -> None:
        """Renew every lease held here every third of the TTL, while any is held: one pipeline
        of PEXPIREs, then SET NX for those that lapsed while this worker was busy (a long pause
        of its loop), held again unless another worker took them meanwhile."""
        while self._on_release:
            await asyncio.sleep(self.ttl_ms / 3000)
            keys = list(self._on_release)
            if not keys:
                return
            round_done = asyncio.get_running_loop().create_future()
            self._renewing = (round_done, frozenset(keys))
            try:
                # Bounded (by the TTL: past it the leases have lapsed anyway): a round stuck in
                # Redis (a half-open connection) must not stop every later renewal.
                async with asyncio.timeout(self.ttl_ms / 1000):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.pexpire(key, self.ttl_ms)
                        extended = await pipe.execute()
                    lapsed = [key for key, ok in zip(keys, extended, strict=True) if not ok and key in self._on_release]
                    if lapsed:
                        async with self.redis.pipeline(transaction=False) as pipe:
                            for key in lapsed:
                                pipe.set(key, self.holder, px=self.ttl_ms, nx=True)
                            await pipe.execute()
            except (RedisError, TimeoutError, OSError) as exc:
                # The next round tries again; a lease lapses only after the whole TTL.
                log.warning("could not renew the job leases", extra={"leases": len(keys), "error": repr(exc)})
            except Exception:
                # Whatever it was, the renewals go on: the task ending would let every lease lapse.
                log.exception("renewing the job leases failed", extra={"leases": len(keys)})
            finally:
                self._renewing = None
                round_done.set_result(None)
