"""A per-user limit on answers being generated at once, shared by every gateway.

A slot is taken when a turn is accepted and given back when its answer is finished (by the
worker or, on failure, the orchestrator). Slots also expire, so a crashed worker cannot
hold a user's slot forever.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

# KEYS[1] = the user's sorted set (member = response id, score = expiry in ms)
# ARGV = now_ms, ttl_ms, limit, response_id. Returns -1 when admitted, else the count in use.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return -1 end
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[3]) then return used end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return -1
"""


class StreamSlots:
    def __init__(self, redis: Redis, namespace: str, limit: int = 0, ttl_s: float = 900.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.limit = limit
        self.ttl_ms = int(ttl_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)

    def key(self, user_id: str) -> str:
        return f"{self.namespace}:user-streams:{user_id}"

    async def acquire(self, user_id: str, response_id: str) -> int:
        """-1 when the slot was taken (or was already this response's), else how many are in use."""
        now_ms = int(time.time() * 1000)
        result = await self._acquire(keys=[self.key(user_id)], args=[now_ms, self.ttl_ms, self.limit, response_id])
        return int(result)

    async def release(self, user_id: str, response_id: str) -> None:
        await self.redis.zrem(self.key(user_id), response_id)
