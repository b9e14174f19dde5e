"""Provider budgets: requests and tokens per minute per model, counted as the provider counts
them, shared by every orchestrator and provider worker.

One Redis Lua call per question (`acquire`) does everything atomically, so the budget is exact
however many replicas ask at once:

- it rolls a sliding one-minute window of reservations (a sorted set by time, the tokens of
  each in a hash, and their running sum);
- a request that fits, and whose turn it is, reserves its prompt tokens plus its output
  reserve, and one request;
- one that does not fit waits in the model's queue: round-robin across users, first come
  first served within a user. Only the head of the queue may reserve, so a stream of small
  requests cannot starve a large one, nor one user everybody else. Whoever asks admits every
  head that fits, in turn (the next ones learn it when they ask again), so a window that frees
  thirty places admits thirty waiters at once, not one per poll. A waiter learns its position
  and an estimated wait, and asks again (`BudgetQueue` polls).

What a provider counts is HTTP requests that reached it, failed ones included (OpenAI counts
unsuccessful requests toward its limit), so every request a worker sends holds a window entry:

- the orchestrator reserves a turn's entry (named by its response id) before publishing the
  job; the worker asks again right before it sends the request (`send_of`): the entry is
  stamped with that moment, and counted from when the provider answered (`answered`), so it
  leaves the window no sooner than the provider's own entry. A job that waited so long that
  its entry slid out takes a new one first, waiting its turn like any request;
- each further request of the same turn (a retry, a tighter trim, a job delivered again after
  its worker died) takes an entry of its own (`<response id>#<n>`), waiting its turn too;
- the number of requests sent is kept per response and model, so the end of a turn gives back
  only what never reached the provider: `settle` reconciles a sent entry to the tokens used
  (its prompt when the provider reported nothing: cancelled while slow, a 429, a fallback) and
  releases one never sent; `unsent` gives back a request that failed before it left (a refused
  connection).

Waiters that stop asking (their process died) are dropped after `stale_s`. `reconcile` and
`release` change one entry directly. All of these are idempotent.

Keys share a hash tag per model ({model}), so a bucket lives in one Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from redis.asyncio import Redis

from parley_common.settings import CommonSettings

# The provider's window: limits are per minute.
WINDOW_S = 60.0
# How long a request may wait for its turn by default: five windows, so a burst of five times
# a model's per-minute limit is served in full; a longer queue fails fast and retryable.
DEFAULT_MAX_WAIT_S = 5 * WINDOW_S
# A response's count of requests sent is kept this long (longer than any turn lasts).
SENDS_TTL_S = 3600
# At most this many waiters ahead of one are simulated for its estimate; the rest are
# extrapolated at the budget's steady rate.
ESTIMATE_STEPS = 1000


class ProviderBudgetSettings(CommonSettings):
    """What the orchestrator and the provider worker read: both wait for provider budget."""

    # A request over its model's provider budget waits at most this long for its turn, then
    # fails with the retryable `provider_budget_timeout`; it asks for its turn this often.
    budget_max_wait_s: float = Field(default=DEFAULT_MAX_WAIT_S, gt=0, le=3600)
    budget_poll_s: float = Field(default=0.2, ge=0.01, le=5)

    @property
    def budget_stale_s(self) -> float:
        """A waiter that has not asked for this long has stopped waiting (its process died)."""
        return max(10.0, self.budget_poll_s * 20)


# KEYS: 1 log (zset id -> counted from ms), 2 tok (hash id -> tokens), 3 used (sum of tok),
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
local function take(id, tokens, now)
  redis.call('ZADD', log, now, id)
  redis.call('HSET', tok, id, tokens)
  redis.call('INCRBY', used, tokens)
end
local function drop(id)
  local old = redis.call('HGET', tok, id)
  if not old then return 0 end
  redis.call('HDEL', tok, id)
  redis.call('ZREM', log, id)
  redis.call('DECRBY', used, old)
  return 1
end
"""

# KEYS 1-8 as above, 9 the response's count of requests sent to this model.
# ARGV: 1 id, 2 user, 3 tokens, 4 rpm (0: none), 5 tpm (0: none), 6 window ms, 7 stale ms,
#       8 prefix of the per-user wait lists, 9 key ttl ms, 10 estimate (1: work out position and
#       wait), 11 send (1: the request is sent now: count it from now, and count the send),
#       12 ttl ms of the count of sends, 13 the most waiters simulated for an estimate.
# Returns {1, 0, 0} when admitted (or already holding a reservation), else {0, position, wait ms}
# (both 0 when no estimate was asked for).
_ACQUIRE = (
    _COMMON
    + """
local id, user, tokens = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rpm, tpm, window, stale, prefix, ttl =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
local want_estimate, sending, sends = ARGV[10] == '1', ARGV[11] == '1', KEYS[9]
local now = now_ms()
local mine = prefix .. user
-- idle buckets vanish; every key gets its expiry again whenever anybody asks
local function touch()
  for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], ttl) end
  redis.call('PEXPIRE', mine, ttl)
end
local function admitted()
  if sending then
    redis.call('ZADD', log, now, id)
    redis.call('INCR', sends)
    redis.call('PEXPIRE', sends, tonumber(ARGV[12]))
  end
  touch()
  return {1, 0, 0}
end
roll(now, window)

-- admitted before (by its own ask, by another's, or a redelivered request): it keeps its reservation
if redis.call('HEXISTS', tok, id) == 1 then return admitted() end

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

-- the heads of the queue take their reservations while they fit, in turn
local count = redis.call('ZCARD', log)
local inuse = tonumber(redis.call('GET', used) or '0')
for _ = 1, 1000 do
  local head_user = redis.call('LINDEX', ring, 0)
  if not head_user then break end
  local head = redis.call('LINDEX', prefix .. head_user, 0)
  if not head then
    redis.call('LPOP', ring)
  else
    local need = tonumber(redis.call('HGET', wtok, head) or '0')
    if (rpm > 0 and count + 1 > rpm) or (tpm > 0 and inuse + need > tpm) then break end
    take(head, need, now)
    count, inuse = count + 1, inuse + need
    unqueue(prefix, head, true)
  end
end
if redis.call('HEXISTS', tok, id) == 1 then return admitted() end
touch()
if not want_estimate then return {0, 0, 0} end

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

-- the wait: the requests ahead (at the average size of those waiting) and this one take their
-- places in turn, each as soon as enough has left the window; the window's entries leave in
-- the order they were counted, and the ones admitted meanwhile leave after all of them
local waiting = redis.call('HLEN', waiter)
local average = tokens
if waiting > 0 then average = tonumber(redis.call('GET', wsum) or '0') / waiting end
local at, size, first, offset, done = {}, {}, 1, 0, false
local function load()
  local got = redis.call('ZRANGE', log, offset, offset + 199, 'WITHSCORES')
  if #got == 0 then done = true return end
  offset = offset + 200
  local ids = {}
  for i = 1, #got, 2 do
    ids[#ids + 1] = got[i]
    at[#at + 1] = tonumber(got[i + 1]) + window
  end
  for _, v in ipairs(redis.call('HMGET', tok, unpack(ids))) do size[#size + 1] = tonumber(v or '0') end
end
local admitted_at, admitted_size, next_new = {}, {}, 1
local function leaving()
  if first > #at and not done then load() end
  if first <= #at then return at[first], size[first], true end
  if next_new <= #admitted_at then return admitted_at[next_new] + window, admitted_size[next_new], false end
  return nil
end
local t = now
local steps = math.min(position, tonumber(ARGV[13]))
for k = 1, steps do
  local need = average
  if k == position then need = tokens end
  while true do
    local fits = (rpm == 0 or count + 1 <= rpm) and (tpm == 0 or inuse + need <= tpm)
    local leaves, freed, old = leaving()
    if leaves == nil or (fits and leaves > t) then break end
    if leaves > t then t = leaves end
    count, inuse = count - 1, inuse - freed
    if old then first = first + 1 else next_new = next_new + 1 end
  end
  admitted_at[#admitted_at + 1] = t
  admitted_size[#admitted_size + 1] = need
  count, inuse = count + 1, inuse + need
end
local wait = t - now
if position > steps then
  local each = 0
  if rpm > 0 then each = window / rpm end
  if tpm > 0 then each = math.max(each, window * average / tpm) end
  wait = wait + (position - steps) * each
end
return {0, position, math.floor(wait)}
"""
)

# ARGV: 1 id, 2 prefix of the per-user wait lists. A place it was given while it left (by
# another's ask) never reached the provider: it goes back too.
_LEAVE = (
    _COMMON
    + """
unqueue(ARGV[2], ARGV[1], false)
drop(ARGV[1])
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

# KEYS: 1-8 as above, 9 the response's count of sends. ARGV: 1 id, 2 tokens it used.
# A reservation whose request reached the provider keeps its place, with `tokens`; one never
# sent goes back. Returns 1 when a reservation was changed.
_FINISH = (
    _COMMON
    + """
if tonumber(redis.call('GET', KEYS[9]) or '0') == 0 then return drop(ARGV[1]) end
local old = redis.call('HGET', tok, ARGV[1])
if not old then return 0 end
redis.call('HSET', tok, ARGV[1], ARGV[2])
redis.call('INCRBY', used, tonumber(ARGV[2]) - tonumber(old))
return 1
"""
)

# ARGV: 1 id, 2 tokens. The provider answered: it counted the request by now at the latest, so
# the entry counts from now (again, if it slid out while the provider was slow to answer).
_ANSWERED = (
    _COMMON
    + """
local now = now_ms()
if redis.call('HEXISTS', tok, ARGV[1]) == 1 then
  redis.call('ZADD', log, now, ARGV[1])
else
  take(ARGV[1], tonumber(ARGV[2]), now)
end
return 1
"""
)

# KEYS: 1-8 as above, 9 the count of sends. ARGV: 1 id, 2 the response id. The request never
# left (its connection was refused): it is not counted as sent, and a further request's own
# entry goes back (the turn's first entry stays: the retry uses it).
_UNSENT = (
    _COMMON
    + """
if tonumber(redis.call('GET', KEYS[9]) or '0') > 0 then redis.call('DECR', KEYS[9]) end
if ARGV[1] ~= ARGV[2] then drop(ARGV[1]) end
return 1
"""
)


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
    position: int = 0  # 1 = next, when not admitted (0: not worked out)
    wait_ms: int = 0  # estimated

    @property
    def estimated(self) -> bool:
        return self.admitted or self.position > 0


@dataclass(frozen=True)
class BucketState:
    requests: int  # reservations in the window
    tokens: int  # their tokens
    waiting: int  # requests in the queue


def send_entry(response_id: str, sent_before: int) -> str:
    """The window entry of a response's next request to a model: the turn's own for the first,
    one of its own for each further one."""
    return response_id if sent_before == 0 else f"{response_id}#{sent_before + 1}"


class ProviderBudget:
    """The shared per-model budgets (see the module doc)."""

    def __init__(self, redis: Redis, namespace: str, *, window_s: float = WINDOW_S, stale_s: float = 10.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.window_ms = int(window_s * 1000)
        self.stale_ms = int(stale_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._leave = redis.register_script(_LEAVE)
        self._settle = redis.register_script(_SETTLE)
        self._state = redis.register_script(_STATE)
        self._finish = redis.register_script(_FINISH)
        self._answered = redis.register_script(_ANSWERED)
        self._unsent = redis.register_script(_UNSENT)

    @classmethod
    def from_settings(cls, redis: Redis, settings: ProviderBudgetSettings) -> ProviderBudget:
        return cls(redis, settings.namespace, stale_s=settings.budget_stale_s)

    def prefix(self, model: str) -> str:
        return f"{self.namespace}:budget:{{{model}}}"

    def keys(self, model: str) -> list[str]:
        p = self.prefix(model)
        return [f"{p}:{name}" for name in ("log", "tok", "used", "ring", "seen", "waiter", "wtok", "wsum")]

    def sends_key(self, model: str, response_id: str) -> str:
        return f"{self.prefix(model)}:sent:{response_id}"

    def _wait_prefix(self, model: str) -> str:
        return f"{self.prefix(model)}:wait:"

    async def acquire(
        self,
        model: str,
        limits: BudgetLimits,
        response_id: str,
        user_id: str,
        tokens: int,
        *,
        estimate: bool = True,
        send_of: str | None = None,
    ) -> Admission:
        """Reserve `tokens` and one request under the entry `response_id`, or learn the place in
        the queue (one Redis call; `estimate=False` skips working out position and wait).

        `send_of`: the response whose request is about to be sent under this entry: once
        admitted, the entry counts from now and the response's count of sends goes up.
        """
        admitted, position, wait_ms = await self._acquire(
            keys=[*self.keys(model), self.sends_key(model, send_of or response_id)],
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
                int(estimate),
                int(send_of is not None),
                SENDS_TTL_S * 1000,
                ESTIMATE_STEPS,
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

    async def sends(self, model: str, response_id: str) -> int:
        """How many requests of this response were sent to this model's provider."""
        return int(await self.redis.get(self.sends_key(model, response_id)) or 0)

    async def settle(self, model: str, response_id: str, tokens: int) -> bool:
        """The turn is over on this model: its entry keeps its place with `tokens` when a request
        reached the provider, and goes back when none did."""
        keys = [*self.keys(model), self.sends_key(model, response_id)]
        return bool(await self._finish(keys=keys, args=[response_id, max(0, tokens)]))

    async def answered(self, model: str, entry: str, tokens: int) -> None:
        """The provider answered the request sent under `entry` (its first bytes or its error)."""
        await self._answered(keys=self.keys(model), args=[entry, max(0, tokens)])

    async def unsent(self, model: str, response_id: str, entry: str) -> None:
        """The request sent under `entry` never reached the provider."""
        keys = [*self.keys(model), self.sends_key(model, response_id)]
        await self._unsent(keys=keys, args=[entry, response_id])

    async def state(self, model: str) -> BucketState:
        """What the model's window holds now, and how many wait."""
        requests, tokens, waiting = await self._state(keys=self.keys(model), args=[self.window_ms])
        return BucketState(int(requests), int(tokens), int(waiting))


__all__ = [
    "DEFAULT_MAX_WAIT_S",
    "WINDOW_S",
    "Admission",
    "BucketState",
    "BudgetLimits",
    "ProviderBudget",
    "ProviderBudgetSettings",
    "send_entry",
]
