"""What the orchestrator remembers of a published job until its answer completes.

Written just before the job is published, read (and then deleted) when its ResponseCompleted
arrives: which model's budget it holds a reservation in, how many prompt tokens it was counted
at (to estimate usage a provider did not report), and the response-cache key of a
deterministic request. Short-lived: an answer that never completes leaves nothing for long.

The record lives in its user's hash-tag slot, beside the user's monthly budget: the turn's
hold writes it in the same Redis step (`record_for`), and the completion's charge reads and
deletes it in the same step (`completions.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from parley_common.budgets.users import ResponseRecord

# The record's fields that keep it after the charge: the completion still settles the provider
# reservation or fills the cache from it, then deletes it.
NEEDED_AFTER_CHARGE = ("reserved", "cache_key")


@dataclass(frozen=True)
class JobRecord:
    model: str
    prompt_tokens: int
    # Holds a reservation in `model`'s provider budget, or may: a new turn's record is written
    # before its reservation is taken (settling one never taken changes nothing).
    reserved: bool
    cache_key: str = ""

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> JobRecord | None:
        """The record of a hash as Redis returns it (None for an empty one: no record)."""
        if not raw:
            return None
        return cls(
            model=raw[b"model"].decode(),
            prompt_tokens=int(raw[b"prompt_tokens"]),
            reserved=raw[b"reserved"] == b"1",
            cache_key=raw.get(b"cache_key", b"").decode(),
        )


class JobRecords:
    def __init__(self, redis: Redis, namespace: str, ttl_s: int = 3600) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl_s = ttl_s

    def key(self, user_id: str, response_id: str) -> str:
        # The user's hash tag, as the keys of parley_common.budgets.users: one script, one slot.
        return f"{self.namespace}:job-record:{{{user_id}}}:{response_id}"

    def record_for(self, user_id: str, response_id: str, record: JobRecord) -> ResponseRecord:
        """The record as the user's budget writes it with the turn's hold."""
        fields: dict[str, str | int] = {
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "reserved": int(record.reserved),
            "cache_key": record.cache_key,
        }
        return ResponseRecord(self.key(user_id, response_id), fields, self.ttl_s)

    async def put(self, user_id: str, response_id: str, record: JobRecord) -> None:
        written = self.record_for(user_id, response_id, record)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(written.key, items=[x for pair in written.fields.items() for x in pair])
            pipe.expire(written.key, written.ttl_s)
            await pipe.execute()

    async def get(self, user_id: str, response_id: str) -> JobRecord | None:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key(user_id, response_id))  # type: ignore[assignment]
        return JobRecord.parse(raw)

    async def delete(self, user_id: str, response_id: str) -> None:
        await self.redis.delete(self.key(user_id, response_id))


__all__ = ["NEEDED_AFTER_CHARGE", "JobRecord", "JobRecords"]
