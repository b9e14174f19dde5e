"""Provider budgets: requests and tokens per minute per model, shared by every orchestrator.

One Redis Lua call per request (`acquire`) does everything atomically, so the budget is exact
however many replicas ask at once:

- it rolls a sliding one-minute window of reservations (a sorted set by time, the tokens of
  each in a hash, and their running sum);
- a request that fits, and whose turn it is, reserves its prompt tokens plus its output
  reserve, and one request;
- one that does not fit waits in the model's queue: round-robin across users, first come
  first served within a user. Only the head of the queue may reserve, so a stream of small
  requests cannot starve a large one, nor one user everybody else. The answer is then its
  position and an estimated wait, and the caller asks again (`BudgetQueue` polls).

Waiters that stop asking (their orchestrator died) are dropped after `stale_s`. When the
answer completes, `reconcile` replaces the reservation by the tokens actually used; a request
that failed or was cancelled before it used anything is `release`d. Both are idempotent.

Keys share a hash tag per model ({model}), so a bucket lives in one Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS: 1 log (zset id -> reserved at ms), 2 tok (hash id -> tokens), 3 used (sum of tok),
#       4 ring (list of users waiting, in turn), 5 seen (zset waiting id -> last ask ms),
#       6 waiter (hash waiting id -> user), 7 wtok (hash waiting id -> tokens), 8 wsum (their sum)
_COMMON = """
local log, tok, used, ring = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seen, waiter, wtok, wsum = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local function unqueue(prefix, id, rotate)
  local who = redis.call('HGET', waiter, id)
  if not who then return end
  local list = prefix .. who
  redis.call('LREM', list, 1, id)
  if redis.call('LLEN', list) == 0 then
    redis.call('LREM', ring, 1, who)
  elseif rotate then
    redis.call('LREM', ring, 1, who)
    redis.call('RPUSH', ring, who)
  end
  redis.call('DECRBY', wsum, tonumber(redis.call('HGET', wtok, id) or '0'))
  redis.call('HDEL', waiter, id)
  redis.call('HDEL', wtok, id)
  redis.call('ZREM', seen, id)
end
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
-- the window slides: reservations older than it no longer count
local function roll(now, window)
  while true do
    local old = redis.call('ZRANGEBYSCORE', log, '-inf', now - window, 'LIMIT', 0, 500)
    if #old == 0 then return end
    local freed = 0
    for _, v in ipairs(redis.call('HMGET', tok, unpack(old))) do
      if v then freed = freed + tonumber(v) end
    end
    redis.call('HDEL', tok, unpack(old))
    redis.call('ZREM', log, unpack(old))
    redis.call('DECRBY', used, freed)
  end
end
"""

# ARGV: 1 id, 2 user, 3 tokens, 4 rpm (0: none), 5 tpm (0: none), 6 window ms, 7 stale ms,
#       8 prefix of the per-user wait lists, 9 key ttl ms.
# Returns {1, 0, 0} when admitted (or already holding a reservation), else {0, position, wait ms}.
_ACQUIRE = (
    _COMMON
    + """
local id, user, tokens = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rpm, tpm, window, stale, prefix, ttl =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local now = now_ms()
local mine = prefix .. user
-- idle buckets vanish; every key gets its expiry again whenever anybody asks
local function touch()
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
  redis.call('PEXPIRE', mine, ttl)
end
roll(now, window)

-- asked again after it was admitted (a redelivered request): it keeps its reservation
if redis.call('HEXISTS', tok, id) == 1 then
  touch()
  return {1, 0, 0}
end

for _, gone in ipairs(redis.call('ZRANGEBYSCORE', seen, '-inf', now - stale, 'LIMIT', 0, 100)) do
  unqueue(prefix, gone, false)
end
if redis.call('HEXISTS', waiter, id) == 0 then
  if redis.call('LLEN', mine) == 0 then redis.call('RPUSH', ring, user) end
  redis.call('RPUSH', mine, id)
  redis.call('HSET', waiter, id, user)
  redis.call('HSET', wtok, id, tokens)
  redis.call('INCRBY', wsum, tokens)
end
redis.call('ZADD', seen, now, id)

local count = redis.call('ZCARD', log)
local inuse = tonumber(redis.call('GET', used) or '0')
local head_user = redis.call('LINDEX', ring, 0)
if redis.call('LINDEX', prefix .. head_user, 0) == id
   and (rpm == 0 or count + 1 <= rpm) and (tpm == 0 or inuse + tokens <= tpm) then
  redis.call('ZADD', log, now, id)
  redis.call('HSET', tok, id, tokens)
  redis.call('INCRBY', used, tokens)
  unqueue(prefix, id, true)
  touch()
  return {1, 0, 0}
end
touch()

-- the position in round-robin order: every user's first `index` requests come first, then
-- the request at `index` of each user ahead of this one in the ring
local index = redis.call('LPOS', mine, id)
local position, ahead = 1, true
for _, u in ipairs(redis.call('LRANGE', ring, 0, -1)) do
  if u == user then ahead = false end
  local n = redis.call('LLEN', prefix .. u)
  position = position + math.min(n, index)
  if ahead and n > index then position = position + 1 end
end

-- the wait: until enough of the window has slid past for the requests ahead and this one
local waiting = redis.call('HLEN', waiter)
local average = tokens
if waiting > 0 then average = tonumber(redis.call('GET', wsum) or '0') / waiting end
local need_r, need_t = 0, 0
if rpm > 0 then need_r = count + position - rpm end
if tpm > 0 then need_t = inuse + average * (position - 1) + tokens - tpm end
local wait = 0
if need_r > 0 or need_t > 0 then
  local rounds = 1
  if rpm > 0 then rounds = math.max(rounds, math.ceil(need_r / rpm)) end
  if tpm > 0 then rounds = math.max(rounds, math.ceil(need_t / tpm)) end
  wait = window * rounds
  local entries = redis.call('ZRANGE', log, 0, 999, 'WITHSCORES')
  local freed_r, freed_t = 0, 0
  for i = 1, #entries, 2 do
    freed_r = freed_r + 1
    freed_t = freed_t + tonumber(redis.call('HGET', tok, entries[i]) or '0')
    if freed_r >= need_r and freed_t >= need_t then
      wait = math.max(0, tonumber(entries[i + 1]) + window - now)
      break
    end
  end
end
return {0, position, math.floor(wait)}
"""
)

# ARGV: 1 id, 2 prefix of the per-user wait lists.
_LEAVE = (
    _COMMON
    + """
unqueue(ARGV[2], ARGV[1], false)
return 1
"""
)

# ARGV: 1 window ms. Returns {requests, tokens} in the window, and the number waiting.
_STATE = (
    _COMMON
    + """
roll(now_ms(), tonumber(ARGV[1]))
return {redis.call('ZCARD', log), tonumber(redis.call('GET', used) or '0'), redis.call('HLEN', waiter)}
"""
)

# KEYS: 1 log, 2 tok, 3 used. ARGV: 1 id, 2 tokens actually used (-1: release the reservation).
# Returns 1 when a reservation was changed, 0 when there was none (settled or slid out already).
_SETTLE = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
local actual = tonumber(ARGV[2])
if actual < 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DECRBY', KEYS[3], old)
else
  redis.call('HSET', KEYS[2], ARGV[1], actual)
  redis.call('INCRBY', KEYS[3], actual - tonumber(old))
end
return 1
"""


@dataclass(frozen=True)
class BudgetLimits:
    requests_per_minute: int | None
    tokens_per_minute: int | None

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.tokens_per_minute is None


@dataclass(frozen=True)
class Admission:
    admitted: bool
    position: int = 0  # 1 = next, when not admitted
    wait_ms: int = 0  # estimated


@dataclass(frozen=True)
class BucketState:
    requests: int  # reservations in the window
    tokens: int  # their tokens
    waiting: int  # requests in the queue


class ProviderBudget:
    """The shared per-model budgets (see the module doc)."""

    def __init__(self, redis: Redis, namespace: str, *, window_s: float = 60.0, stale_s: float = 10.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.window_ms = int(window_s * 1000)
        self.stale_ms = int(stale_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._leave = redis.register_script(_LEAVE)
        self._settle = redis.register_script(_SETTLE)
        self._state = redis.register_script(_STATE)

    def prefix(self, model: str) -> str:
        return f"{self.namespace}:budget:{{{model}}}"

    def keys(self, model: str) -> list[str]:
        p = self.prefix(model)
        return [f"{p}:{name}" for name in ("log", "tok", "used", "ring", "seen", "waiter", "wtok", "wsum")]

    def _wait_prefix(self, model: str) -> str:
        return f"{self.prefix(model)}:wait:"

    async def acquire(self, model: str, limits: BudgetLimits, response_id: str, user_id: str, tokens: int) -> Admission:
        """Reserve `tokens` and one request, or learn the place in the queue (one Redis call)."""
        admitted, position, wait_ms = await self._acquire(
            keys=self.keys(model),
            args=[
                response_id,
                user_id,
                tokens,
                limits.requests_per_minute or 0,
                limits.tokens_per_minute or 0,
                self.window_ms,
                self.stale_ms,
                self._wait_prefix(model),
                self.window_ms * 2 + self.stale_ms,
            ],
        )
        return Admission(bool(admitted), int(position), int(wait_ms))

    async def leave(self, model: str, response_id: str) -> None:
        """Leave the queue without a reservation (cancelled, timed out)."""
        await self._leave(keys=self.keys(model), args=[response_id, self._wait_prefix(model)])

    async def reconcile(self, model: str, response_id: str, actual_tokens: int) -> bool:
        """Count what the request really used instead of what it reserved."""
        return bool(await self._settle(keys=self.keys(model)[:3], args=[response_id, max(0, actual_tokens)]))

    async def release(self, model: str, response_id: str) -> bool:
        """Give the whole reservation back (the provider was not used)."""
        return bool(await self._settle(keys=self.keys(model)[:3], args=[response_id, -1]))

    async def state(self, model: str) -> BucketState:
        """What the model's window holds now, and how many wait."""
        requests, tokens, waiting = await self._state(keys=self.keys(model), args=[self.window_ms])
        return BucketState(int(requests), int(tokens), int(waiting))


__all__ = ["Admission", "BucketState", "BudgetLimits", "ProviderBudget"]
