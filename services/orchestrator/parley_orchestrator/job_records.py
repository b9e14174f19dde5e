"""What the orchestrator remembers of a published job until its answer completes.

Written just before the job is published, read (and then deleted) when its ResponseCompleted
arrives: which model's budget it holds a reservation in, how many prompt tokens it was counted
at (to estimate usage a provider did not report), and the response-cache key of a
deterministic request. Short-lived: an answer that never completes leaves nothing for long.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis


@dataclass(frozen=True)
class JobRecord:
    model: str
    prompt_tokens: int
    reserved: bool  # holds a reservation in `model`'s provider budget
    cache_key: str = ""


class JobRecords:
    def __init__(self, redis: Redis, namespace: str, ttl_s: int = 3600) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_s = ttl_s

    def key(self, response_id: str) -> str:
        return f"{self.namespace}:job-record:{response_id}"

    async def put(self, response_id: str, record: JobRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.key(response_id),
                mapping={
                    "model": record.model,
                    "prompt_tokens": record.prompt_tokens,
                    "reserved": int(record.reserved),
                    "cache_key": record.cache_key,
                },
            )
            pipe.expire(self.key(response_id), self.ttl_s)
            await pipe.execute()

    async def get(self, response_id: str) -> JobRecord | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key(response_id))  # type: ignore[assignment]
        if not raw:
            return None
        return JobRecord(
            model=raw[b"model"].decode(),
            prompt_tokens=int(raw[b"prompt_tokens"]),
            reserved=raw[b"reserved"] == b"1",
            cache_key=raw.get(b"cache_key", b"").decode(),
        )

    async def delete(self, response_id: str) -> None:
        await self.redis.delete(self.key(response_id))


__all__ = ["JobRecord", "JobRecords"]
