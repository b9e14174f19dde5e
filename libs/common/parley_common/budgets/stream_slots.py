"""A per-user limit on streams, shared by every gateway: answers being generated and open
stream connections.

An answer takes a slot when its turn is accepted and gives it back when it is finished (by the
worker or, on failure, the orchestrator). Every open stream connection (SSE: a turn's own, a
resume, an OpenAI-compatible stream) is counted too, so holding many connections open is
bounded like starting many answers; but the first connection watching an answer that is being
generated rides on that answer's slot, so a turn and its stream cost one, and a client that
lost its connection and resumes does not pay twice.

Both kinds expire: an answer's slot after `ttl_s` (a crashed worker cannot hold it forever), a
connection's after `connection_ttl_s` unless the gateway serving it renews it (a crashed
gateway's connections are given back within that time).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

# A connection's member is "<response id>|<connection id>"; an answer's is its response id.
SEPARATOR = "|"

# KEYS[1] = the user's sorted set (member -> expiry in ms).
# ARGV = now_ms, limit, then pairs of (member, ttl_ms) to add: all are admitted, or none.
# Returns -1 when admitted, else the number of slots in use (StreamSlots._take reads it).
_ACQUIRE = """
local key, now, limit = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local present = {}
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do present[member] = true end
local function used()
  local watched, count = {}, 0
  for member in pairs(present) do
    local sep = string.find(member, '|', 1, true)
    local answer = sep and string.sub(member, 1, sep - 1)
    if answer and present[answer] and not watched[answer] then
      watched[answer] = true  -- the first connection to an answer being generated rides on its slot
    else
      count = count + 1
    end
  end
  return count
end
local before = used()
local longest = 0
for i = 3, #ARGV, 2 do
  present[ARGV[i]] = true
  longest = math.max(longest, tonumber(ARGV[i + 1]))
end
local after = used()
if after > before and after > limit then return before end
for i = 3, #ARGV, 2 do
  redis.call('ZADD', key, now + tonumber(ARGV[i + 1]), ARGV[i])
end
if redis.call('PTTL', key) < longest then redis.call('PEXPIRE', key, longest) end
return -1
"""

# KEYS[1] = the user's set; ARGV = now_ms, ttl_ms, member. Renews a connection's slot (taking
# it again if it had expired meanwhile: the connection is still open, so it counts).
_RENEW = """
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
"""


@dataclass(frozen=True)
class Refused:
    """No slot was taken: the user already holds `in_use` slots, their limit."""

    in_use: int


class StreamSlots:
    def __init__(
        self, redis: Redis, namespace: str, limit: int = 0, ttl_s: float = 900.0, connection_ttl_s: float = 60.0
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.limit = limit
        self.ttl_ms = int(ttl_s * 1000)
        self.connection_ttl_ms = int(connection_ttl_s * 1000)
        # How often a gateway renews the connections it serves: well within their expiry.
        self.renew_every_s = connection_ttl_s / 3
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    def key(self, user_id: str) -> str:
        return f"{self.namespace}:user-streams:{user_id}"

    @staticmethod
    def connection_member(response_id: str, connection_id: str) -> str:
        return f"{response_id}{SEPARATOR}{connection_id}"

    async def _take(self, user_id: str, *members: tuple[str, int]) -> Refused | None:
        args: list[str | int] = [int(time.time() * 1000), self.limit]
        for member, ttl_ms in members:
            args += [member, ttl_ms]
        in_use = int(await self._acquire(keys=[self.key(user_id)], args=args))
        return None if in_use < 0 else Refused(in_use)

    async def acquire(self, user_id: str, response_id: str, connection_id: str | None = None) -> Refused | None:
        """Take an answer's slot, with the connection that will stream it when given: None when
        taken (or already this response's), else Refused with how many slots are in use."""
        members = [(response_id, self.ttl_ms)]
        if connection_id is not None:
            members.append((self.connection_member(response_id, connection_id), self.connection_ttl_ms))
        return await self._take(user_id, *members)

    def queue_acquire(
        self, pipe: Pipeline, user_id: str, response_id: str, connection_id: str | None = None
    ) -> Callable[[Any], Awaitable[Refused | None]]:
        """`acquire` as one command of the caller's pipeline; returns what reads that command's
        reply (loading the script and taking the slot then, when Redis lost the script)."""
        members = [(response_id, self.ttl_ms)]
        if connection_id is not None:
            members.append((self.connection_member(response_id, connection_id), self.connection_ttl_ms))
        args: list[str | int] = [int(time.time() * 1000), self.limit]
        for member, ttl_ms in members:
            args += [member, ttl_ms]
        keys = [self.key(user_id)]
        # EVALSHA itself: a pipeline given the Script object asks SCRIPT EXISTS first.
        pipe.evalsha(self._acquire.sha, len(keys), *keys, *args)

        async def refused(raw: Any) -> Refused | None:
            if isinstance(raw, NoScriptError):
                raw = await self._acquire(keys=keys, args=args)
            elif isinstance(raw, Exception):
                raise raw
            in_use = int(raw)
            return None if in_use < 0 else Refused(in_use)

        return refused

    async def release(self, user_id: str, response_id: str) -> None:
        await self.redis.zrem(self.key(user_id), response_id)

    def queue_release(self, pipe: Pipeline, user_id: str, response_id: str) -> None:
        """`release` as one command of the caller's pipeline."""
        pipe.zrem(self.key(user_id), response_id)

    async def free_finished(self, user_id: str, finished: Callable[[str], Awaitable[bool]]) -> int:
        """Give back the slots of this user's answers that have ended (`finished(response_id)`)
        but are still held: a worker frees an answer's slot just after its last frame is sent,
        so a client that read the end of an answer and at once starts another can arrive first.
        Connections keep theirs (an open connection counts until it closes). Returns how many
        slots were given back."""
        members = await self.redis.zrange(self.key(user_id), 0, -1)
        answers = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        ended = [answer for answer in answers if SEPARATOR not in answer and await finished(answer)]
        if ended:
            await self.redis.zrem(self.key(user_id), *ended)
        return len(ended)

    async def acquire_connection(self, user_id: str, response_id: str, connection_id: str) -> Refused | None:
        """Take a slot for one more connection streaming `response_id`: None when taken, else
        Refused with how many slots are in use. It lasts `connection_ttl_s` unless renewed."""
        return await self._take(user_id, (self.connection_member(response_id, connection_id), self.connection_ttl_ms))

    async def renew_connection(self, user_id: str, response_id: str, connection_id: str) -> None:
        """Keep a connection's slot for another `connection_ttl_s`."""
        member = self.connection_member(response_id, connection_id)
        now_ms = int(time.time() * 1000)
        await self._renew(keys=[self.key(user_id)], args=[now_ms, self.connection_ttl_ms, member])

    async def release_connection(self, user_id: str, response_id: str, connection_id: str) -> None:
        await self.redis.zrem(self.key(user_id), self.connection_member(response_id, connection_id))
