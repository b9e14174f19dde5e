"""Per-user monthly limits on tokens and cost, shared by every gateway and orchestrator.

Each user has a plan (PARLEY_PLANS, PARLEY_USER_PLANS, PARLEY_DEFAULT_PLAN, read by the gateway
and the orchestrator alike) with a monthly token limit and a monthly cost limit in
micro-dollars. Months are calendar months in UTC; usage resets at 00:00 UTC on the first of
the next month.

A turn holds its worst case from admission until it ends, so turns running at once can never
spend together more than the plan has left:

- The gateway, before it publishes a request, holds what the turn may use at most as far as
  it can tell: the message (and the system prompt) counted with the model's tokenizer, plus
  the longest answer allowed, and their price (for an `/image` turn, the picture's price).
  A turn that does not fit gets 429 `user_budget_exceeded` (with Retry-After and the reset
  time) and nothing is spent. Image generations (POST /v1/images/generations) hold the price
  of all their images the same way.
- The orchestrator, once the prompt is assembled (the conversation's history, the images) and
  the model is picked, replaces that hold by the turn's exact worst case: its prompt's tokens
  plus its output cap, priced on the model that answers. A turn that no longer fits ends
  before any provider is called, with an `error` frame `user_budget_exceeded`.
- When the answer completes (ResponseCompleted), the orchestrator charges its usage as the
  provider reported it and drops the hold, in one step (idempotent per response: a marker
  key, so a redelivered event is not charged twice). A turn that fails before any worker has
  it gives its hold back at once; a hold nobody settles (a process died) expires after an hour.

Hold and charge are atomic Redis scripts, and a hold is admitted only while what is spent plus
what every running turn holds, plus this one, fits the limit. Overshoot is therefore bounded
by the difference between a hold and the truth: a provider counting the prompt differently
from Parley's tokenizer (Anthropic's and Gemini's are not public; Parley counts with the
nearest one), or a price reported differently from the registry's.

A record of the response may ride along (`ResponseRecord`, the orchestrator's job record):
written by the hold and read, then deleted, by the charge, in the same scripts; and the hold
may read a flag of any key (the turn's cancellation) in the same round trip (`hold_unless`).
A turn then costs the orchestrator one Redis round trip at its start and one at its end.

All of a user's keys share a hash tag ({user}), so the scripts touch one Redis Cluster slot.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from parley_common.errors import RateLimited
from parley_common.settings import CommonSettings

# KEYS (every script): 1 the user's usage hash of the month, 2 the user's holds (hash id ->
# "tokens cost", with their sums in the fields '#tokens' and '#cost'), 3 when each hold expires
# (zset id -> ms), 4 the response's charge marker.
_LEDGER = """
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
local function drop(id)
  local held = redis.call('HGET', KEYS[2], id)
  if not held then return end
  local t, c = string.match(held, '^(%d+) (%d+)$')
  -- 0 - x, not -x: Lua writes minus zero as "-0", which Redis refuses as an integer
  redis.call('HINCRBY', KEYS[2], '#tokens', 0 - tonumber(t))
  redis.call('HINCRBY', KEYS[2], '#cost', 0 - tonumber(c))
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local function expire(now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)) do drop(id) end
end
local function sums(key, a, b)
  local v = redis.call('HMGET', key, a, b)
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
"""

# KEYS 5 (optional): the response's record (a hash in the user's slot, see ResponseRecord),
# written in the same step unless the hold is refused.
# ARGV: 1 response id, 2 tokens, 3 cost, 4 token limit (-1: none), 5 cost limit (-1: none),
# 6 hold ttl ms, 7 the record's ttl s, 8… its fields and values. Returns {outcome, spent tokens,
# spent cost, held tokens, held cost}: outcome 1 when held (held = all holds, this one
# included), 0 when it does not fit (held = the others'), 2 when the response was charged
# already (nothing is held for it).
_HOLD = (
    _LEDGER
    + """
local function keep_record()
  if KEYS[5] then
    redis.call('HSET', KEYS[5], unpack(ARGV, 8))
    redis.call('EXPIRE', KEYS[5], ARGV[7])
  end
end
local now = now_ms()
expire(now)
local st, sc = sums(KEYS[1], 'tokens', 'cost_micros')
local ht, hc = sums(KEYS[2], '#tokens', '#cost')
if redis.call('EXISTS', KEYS[4]) == 1 then
  keep_record()
  return {2, st, sc, ht, hc}
end
local id, t, c = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local tl, cl = tonumber(ARGV[4]), tonumber(ARGV[5])
local ot, oc = 0, 0
local old = redis.call('HGET', KEYS[2], id)
if old then
  local a, b = string.match(old, '^(%d+) (%d+)$')
  ot, oc = tonumber(a), tonumber(b)
end
local others_t, others_c = ht - ot, hc - oc
local fits = (tl < 0 or st + others_t + t <= tl) and (cl < 0 or sc + others_c + c <= cl)
-- a hold may always shrink (the exact worst case below the gateway's estimate)
if not fits and not (old and t <= ot and c <= oc) then return {0, st, sc, others_t, others_c} end
redis.call('HSET', KEYS[2], id, t .. ' ' .. c)
redis.call('HINCRBY', KEYS[2], '#tokens', t - ot)
redis.call('HINCRBY', KEYS[2], '#cost', c - oc)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), id)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
keep_record()
return {1, st, sc, others_t + t, others_c + c}
"""
)

# ARGV: 1 response id.
_RELEASE = (
    _LEDGER
    + """
expire(now_ms())
drop(ARGV[1])
return 1
"""
)

# ARGV: 1 response id, 2 tokens, 3 cost_micros, 4 marker ttl ms, 5 usage ttl ms.
# Returns 1 when charged, 0 if it was before. The response's hold goes either way.
_CHARGE = (
    _LEDGER
    + """
expire(now_ms())
drop(ARGV[1])
if redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'cost_micros', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""
)

# The end of a turn in one step: its usage charged (once per response, as _CHARGE) or, when it
# used nothing, its hold given back (as _RELEASE); and its record (KEYS 5, a hash in the user's
# slot) read and deleted, unless one of the fields named in ARGV 6… is set ('' and '0' are not):
# something else still needs it, and deletes it when done.
# ARGV: 1 response id, 2 tokens, 3 cost_micros, 4 marker ttl ms, 5 usage ttl ms, 6… those fields.
# Returns {1 when charged now (0: used nothing, or charged before), the record's fields and
# values as HGETALL gives them (empty when there is none)}.
_SETTLE = (
    _LEDGER
    + """
expire(now_ms())
drop(ARGV[1])
local charged = 0
if (tonumber(ARGV[2]) > 0 or tonumber(ARGV[3]) > 0) and redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[4]) then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'cost_micros', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  charged = 1
end
local record = redis.call('HGETALL', KEYS[5])
if #record > 0 then
  local needed = false
  for i = 1, #record, 2 do
    for j = 6, #ARGV do
      if record[i] == ARGV[j] and record[i + 1] ~= '' and record[i + 1] ~= '0' then needed = true end
    end
  end
  if not needed then redis.call('DEL', KEYS[5]) end
end
return {charged, record}
"""
)

# Returns {spent tokens, spent cost, held tokens, held cost}.
_STATE = (
    _LEDGER
    + """
expire(now_ms())
local st, sc = sums(KEYS[1], 'tokens', 'cost_micros')
local ht, hc = sums(KEYS[2], '#tokens', '#cost')
return {st, sc, ht, hc}
"""
)

_MARKER_TTL_MS = 7 * 24 * 3600 * 1000
_USAGE_TTL_MS = 62 * 24 * 3600 * 1000  # the month and the next: enough to answer questions about it
# A hold nobody settles (its turn's process died) is given back after this long: longer than
# any turn lasts (the waits for the conversation's previous turn and for provider budget, and
# the provider's own total timeout).
HOLD_TTL_S = 3600
# A request refused while the user's other answers hold the rest of the budget may try again
# this soon: they settle when they end.
RETRY_WHILE_HELD_S = 5


class PlanLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # None: no limit.
    monthly_tokens: int | None = Field(default=None, ge=0)
    monthly_cost_micros: int | None = Field(default=None, ge=0)


DEFAULT_PLANS = {"default": PlanLimits(monthly_tokens=10_000_000, monthly_cost_micros=50_000_000)}


class PlanSettings(CommonSettings):
    """The plans, as the gateway (admitting turns) and the orchestrator (holding each turn's
    exact worst case) both read them: set them the same for both."""

    # Per-user monthly limits: plans by name (JSON, e.g. {"free": {"monthly_tokens": 100000,
    # "monthly_cost_micros": 1000000}}; a limit left out is no limit), the plan of some users
    # (JSON {"user id": "plan"}), and the plan of everyone else.
    plans: dict[str, PlanLimits] = DEFAULT_PLANS
    user_plans: dict[str, str] = {}
    default_plan: str = "default"

    @model_validator(mode="after")
    def _known_plans(self) -> Self:
        named = [("PARLEY_DEFAULT_PLAN", self.default_plan)] + [(f"user {u!r}", p) for u, p in self.user_plans.items()]
        for who, plan in named:
            if plan not in self.plans:
                raise ValueError(f"{who} names plan {plan!r}, which PARLEY_PLANS does not define")
        return self


def month_of(now: float) -> tuple[str, int]:
    """The month `now` (epoch seconds) falls in, as "YYYY-MM", and when it ends (epoch seconds)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    start_next = dt.datetime(day.year + (day.month == 12), day.month % 12 + 1, 1, tzinfo=dt.UTC)
    return f"{day.year:04d}-{day.month:02d}", int(start_next.timestamp())


@dataclass(frozen=True)
class MonthlySpend:
    tokens: int = 0
    cost_micros: int = 0


@dataclass(frozen=True)
class BudgetStatus:
    plan: str
    limits: PlanLimits
    spent: MonthlySpend
    reset_at: int  # epoch seconds
    # The worst cases held by the user's turns running now (settled when they end).
    held: MonthlySpend = field(default_factory=MonthlySpend)

    @property
    def tokens_remaining(self) -> int | None:
        limit = self.limits.monthly_tokens
        return None if limit is None else max(0, limit - self.spent.tokens - self.held.tokens)

    @property
    def cost_remaining_micros(self) -> int | None:
        limit = self.limits.monthly_cost_micros
        return None if limit is None else max(0, limit - self.spent.cost_micros - self.held.cost_micros)

    def exhausted(self) -> str | None:
        """Which limit has nothing left ("tokens" or "cost"), or None."""
        if self.tokens_remaining == 0:
            return "tokens"
        if self.cost_remaining_micros == 0:
            return "cost"
        return None

    def shortfall(self, tokens: int, cost_micros: int) -> str | None:
        """Why a request that may use up to `tokens` and `cost_micros` cannot start now (a
        sentence), or None when it fits."""
        for kind, limit, spent, held, need, unit in (
            ("tokens", self.limits.monthly_tokens, self.spent.tokens, self.held.tokens, tokens, "tokens"),
            (
                "cost",
                self.limits.monthly_cost_micros,
                self.spent.cost_micros,
                self.held.cost_micros,
                cost_micros,
                "micro-dollars",
            ),
        ):
            if limit is None:
                continue
            if spent >= limit:
                return f"the monthly {kind} limit of your plan {self.plan!r} is used up"
            if spent + held + need > limit:
                left = max(0, limit - spent - held)
                running = " while your other answers are generated" if held else ""
                return (
                    f"this request may use up to {need} {unit} (its prompt and the longest answer it allows), "
                    f"more than the {left} left of the monthly {kind} limit of your plan {self.plan!r}{running}; "
                    "ask for a shorter answer (max_output_tokens) or wait"
                )
        return None


@dataclass(frozen=True)
class Hold:
    """The answer of MonthlyUsage.hold."""

    held: bool  # False: it does not fit
    spent: MonthlySpend
    # Every hold of the user, this one included when held; the others' when not.
    holds: MonthlySpend


@dataclass(frozen=True)
class ResponseRecord:
    """A hash that goes with a response's hold: written in the same step as the hold (unless
    it is refused) and read, and deleted, in the same step as the charge (`MonthlyUsage.settle`).
    Its key must carry the user's hash tag (`MonthlyUsage.record_key`): one script, one slot."""

    key: str
    fields: Mapping[str, str | int]
    ttl_s: int


# (spent this month, held by running turns)
_State = tuple[MonthlySpend, MonthlySpend]


class MonthlyUsage:
    """The Redis ledger of what each user spent per month, and of what their running turns hold."""

    def __init__(self, redis: Redis, namespace: str, *, hold_ttl_s: int = HOLD_TTL_S) -> None:
        self.redis = redis
        self.namespace = namespace
        self.hold_ttl_ms = hold_ttl_s * 1000
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._charge = redis.register_script(_CHARGE)
        self._state = redis.register_script(_STATE)
        self._settle = redis.register_script(_SETTLE)

    def key(self, user_id: str, month: str) -> str:
        return f"{self.namespace}:user-usage:{{{user_id}}}:{month}"

    def marker_key(self, user_id: str, response_id: str) -> str:
        return f"{self.namespace}:user-charged:{{{user_id}}}:{response_id}"

    def record_key(self, kind: str, user_id: str, response_id: str) -> str:
        """The key of a ResponseRecord (`kind` names what it is) in the user's hash-tag slot."""
        return f"{self.namespace}:{kind}:{{{user_id}}}:{response_id}"

    def keys(self, user_id: str, response_id: str, now: float | None) -> list[str]:
        month, _ = month_of(time.time() if now is None else now)
        return [
            self.key(user_id, month),
            f"{self.namespace}:user-holds:{{{user_id}}}",
            f"{self.namespace}:user-hold-expiry:{{{user_id}}}",
            self.marker_key(user_id, response_id),
        ]

    async def state(self, user_id: str, now: float | None = None) -> tuple[MonthlySpend, MonthlySpend]:
        """(spent this month, held by running turns)."""
        st, sc, ht, hc = await self._state(keys=self.keys(user_id, "", now))
        return MonthlySpend(int(st), int(sc)), MonthlySpend(int(ht), int(hc))

    async def spent(self, user_id: str, now: float | None = None) -> MonthlySpend:
        return (await self.state(user_id, now))[0]

    def queue_state(self, pipe: Pipeline, user_id: str, now: float) -> Callable[[Any], Awaitable[_State]]:
        """`state` as one command of the caller's pipeline; returns what makes the state of
        that command's reply (loading the script when Redis lost it)."""
        keys = self.keys(user_id, "", now)
        # EVALSHA itself: a pipeline given the Script object asks SCRIPT EXISTS first.
        pipe.evalsha(self._state.sha, len(keys), *keys)

        async def state_of(raw: Any) -> _State:
            if isinstance(raw, NoScriptError):
                raw = await self._state(keys=keys)
            elif isinstance(raw, Exception):
                raise raw
            st, sc, ht, hc = raw
            return MonthlySpend(int(st), int(sc)), MonthlySpend(int(ht), int(hc))

        return state_of

    def queue_hold(
        self,
        pipe: Pipeline,
        user_id: str,
        response_id: str,
        tokens: int,
        cost_micros: int,
        limits: PlanLimits,
        now: float,
    ) -> Callable[[Any], Awaitable[Hold]]:
        """`hold` as one command of the caller's pipeline; returns what makes the Hold of that
        command's reply (a hold is repeatable: when Redis lost the script, it is loaded and run)."""
        keys, args = self._hold_call(user_id, response_id, tokens, cost_micros, limits, now, None)
        pipe.evalsha(self._hold.sha, len(keys), *keys, *args)

        async def hold_of(raw: Any) -> Hold:
            if isinstance(raw, NoScriptError):
                raw = await self._hold(keys=keys, args=args)
            elif isinstance(raw, Exception):
                raise raw
            return _hold_of(raw)

        return hold_of

    async def hold(
        self,
        user_id: str,
        response_id: str,
        tokens: int,
        cost_micros: int,
        limits: PlanLimits,
        now: float | None = None,
        *,
        record: ResponseRecord | None = None,
    ) -> Hold:
        """Hold `tokens` and `cost_micros` for a response (replacing what it held) if what is
        spent and held, with it, fits `limits`. A response charged already holds nothing.
        `record` is written in the same step unless the hold is refused."""
        keys, args = self._hold_call(user_id, response_id, tokens, cost_micros, limits, now, record)
        return _hold_of(await self._hold(keys=keys, args=args))

    async def hold_unless(
        self,
        flag_key: str,
        user_id: str,
        response_id: str,
        tokens: int,
        cost_micros: int,
        limits: PlanLimits | None,
        now: float | None = None,
        *,
        record: ResponseRecord | None = None,
    ) -> tuple[bytes | None, Hold | None]:
        """`hold` (no hold when `limits` is None: only the record is written) and, in the same
        round trip, the value of `flag_key` (a key of any slot, e.g. a cancellation flag): the
        caller that finds the flag set ends the response, and its completion settles whatever
        this step held and wrote. Returns (the flag's value, the hold; None without `limits`)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(flag_key)
            if limits is not None:
                keys, args = self._hold_call(user_id, response_id, tokens, cost_micros, limits, now, record)
                # EVALSHA itself: a pipeline given the Script object asks SCRIPT EXISTS first,
                # a round trip of its own on every call.
                pipe.evalsha(self._hold.sha, len(keys), *keys, *args)
            elif record is not None:
                pipe.hset(record.key, items=[x for pair in record.fields.items() for x in pair])
                pipe.expire(record.key, record.ttl_s)
            results = await pipe.execute(raise_on_error=False)
        flag = results[0]
        if isinstance(flag, Exception):
            raise flag
        if limits is None:
            for result in results[1:]:
                if isinstance(result, Exception):
                    raise result
            return flag, None
        raw = results[1]
        if isinstance(raw, NoScriptError):
            # Redis lost its scripts (a restart): the Script call loads it; a hold is repeatable.
            raw = await self._hold(keys=keys, args=args)
        elif isinstance(raw, Exception):
            raise raw
        return flag, _hold_of(raw)

    def _hold_call(
        self,
        user_id: str,
        response_id: str,
        tokens: int,
        cost_micros: int,
        limits: PlanLimits,
        now: float | None,
        record: ResponseRecord | None,
    ) -> tuple[list[str], list[str | int]]:
        keys = self.keys(user_id, response_id, now)
        args: list[str | int] = [
            response_id,
            max(0, tokens),
            max(0, cost_micros),
            -1 if limits.monthly_tokens is None else limits.monthly_tokens,
            -1 if limits.monthly_cost_micros is None else limits.monthly_cost_micros,
            self.hold_ttl_ms,
        ]
        if record is not None and record.fields:
            keys.append(record.key)
            args.append(record.ttl_s)
            for name, value in record.fields.items():
                args += [name, value]
        return keys, args

    async def release(self, user_id: str, response_id: str) -> None:
        """Give a response's hold back (it will not be charged: nothing ran)."""
        await self._release(keys=self.keys(user_id, response_id, None), args=[response_id])

    async def charge(
        self, response_id: str, user_id: str, tokens: int, cost_micros: int, now: float | None = None
    ) -> bool:
        """Add one answer's usage to its user's month and drop its hold; False when this
        response was charged before."""
        charged = await self._charge(
            keys=self.keys(user_id, response_id, now),
            args=[response_id, max(0, tokens), max(0, cost_micros), _MARKER_TTL_MS, _USAGE_TTL_MS],
        )
        return bool(charged)

    async def settle(
        self,
        response_id: str,
        user_id: str,
        tokens: int,
        cost_micros: int,
        record_key: str,
        needed_while: tuple[str, ...] = (),
        now: float | None = None,
    ) -> tuple[bool, dict[bytes, bytes]]:
        """The end of a response in one step: `charge` when it used anything, else `release`;
        and its record (a ResponseRecord's key) read and deleted, unless a field named in
        `needed_while` is set (its caller deletes it once done). Returns (charged now, the
        record's fields, empty when there is none)."""
        charged, flat = await self._settle(
            keys=[*self.keys(user_id, response_id, now), record_key],
            args=[response_id, max(0, tokens), max(0, cost_micros), _MARKER_TTL_MS, _USAGE_TTL_MS, *needed_while],
        )
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return bool(charged), fields


class UserBudgets:
    """Plans and the ledger: what a user may still spend this month."""

    def __init__(
        self, usage: MonthlyUsage, plans: dict[str, PlanLimits], user_plans: dict[str, str], default_plan: str
    ) -> None:
        self.usage = usage
        self.plans = plans
        self.user_plans = user_plans
        self.default_plan = default_plan

    @classmethod
    def from_settings(cls, redis: Redis, settings: PlanSettings) -> UserBudgets:
        return cls(MonthlyUsage(redis, settings.namespace), settings.plans, settings.user_plans, settings.default_plan)

    def plan_of(self, user_id: str) -> str:
        return self.user_plans.get(user_id, self.default_plan)

    async def status(self, user_id: str) -> BudgetStatus:
        now = time.time()
        plan = self.plan_of(user_id)
        spent, held = await self.usage.state(user_id, now)
        return BudgetStatus(plan=plan, limits=self.plans[plan], spent=spent, reset_at=month_of(now)[1], held=held)

    async def check(self, user_id: str, tokens: int = 0, cost_micros: int = 0) -> BudgetStatus:
        """The user's status; raises RateLimited (429 user_budget_exceeded) when a request that
        may use up to `tokens` and `cost_micros` does not fit what is left (nothing is held)."""
        status = await self.status(user_id)
        reason = status.shortfall(tokens, cost_micros)
        if reason is not None:
            raise _refusal(status, reason)
        return status

    def queue_status(self, pipe: Pipeline, user_id: str) -> Callable[[Any], Awaitable[BudgetStatus]]:
        """`status` as one command of the caller's pipeline; returns what makes the status of
        that command's reply."""
        now = time.time()
        plan = self.plan_of(user_id)
        state_of = self.usage.queue_state(pipe, user_id, now)

        async def status_of(raw: Any) -> BudgetStatus:
            spent, held = await state_of(raw)
            return BudgetStatus(plan=plan, limits=self.plans[plan], spent=spent, reset_at=month_of(now)[1], held=held)

        return status_of

    def queue_hold(
        self, pipe: Pipeline, user_id: str, response_id: str, tokens: int, cost_micros: int
    ) -> Callable[[Any], Awaitable[None]] | None:
        """`hold` as one command of the caller's pipeline (None, and no command, when the user's
        plan limits nothing); returns what checks that command's reply: it raises RateLimited
        (429 user_budget_exceeded) when the hold did not fit."""
        if not self.limited(user_id):
            return None
        now = time.time()
        plan = self.plan_of(user_id)
        hold_of = self.usage.queue_hold(pipe, user_id, response_id, tokens, cost_micros, self.plans[plan], now)

        async def check(raw: Any) -> None:
            self._refuse_unless_held(await hold_of(raw), plan, now, tokens, cost_micros)

        return check

    def limited(self, user_id: str) -> bool:
        """Whether the user's plan limits anything (else nothing needs holding)."""
        limits = self.plans[self.plan_of(user_id)]
        return limits.monthly_tokens is not None or limits.monthly_cost_micros is not None

    async def hold(self, user_id: str, response_id: str, tokens: int, cost_micros: int) -> None:
        """Hold the most a request may use until it is charged (MonthlyUsage.charge) or given
        back (`release`); raises RateLimited (429 user_budget_exceeded) when it does not fit."""
        if not self.limited(user_id):
            return
        now = time.time()
        plan = self.plan_of(user_id)
        limits = self.plans[plan]
        got = await self.usage.hold(user_id, response_id, tokens, cost_micros, limits, now)
        self._refuse_unless_held(got, plan, now, tokens, cost_micros)

    async def hold_unless(
        self,
        flag_key: str,
        user_id: str,
        response_id: str,
        tokens: int,
        cost_micros: int,
        *,
        record: ResponseRecord | None = None,
    ) -> bytes | None:
        """`hold`, with `record` written in the same step, unless `flag_key` (read in the same
        round trip) is set: then its value is returned and nothing is refused (the caller ends
        the response; its completion settles what this held and wrote). Without limits on the
        user's plan only the record is written."""
        now = time.time()
        plan = self.plan_of(user_id)
        limits = self.plans[plan] if self.limited(user_id) else None
        flag, got = await self.usage.hold_unless(
            flag_key, user_id, response_id, tokens, cost_micros, limits, now, record=record
        )
        if flag is None and got is not None:
            self._refuse_unless_held(got, plan, now, tokens, cost_micros)
        return flag

    def _refuse_unless_held(self, got: Hold, plan: str, now: float, tokens: int, cost_micros: int) -> None:
        if got.held:
            return
        limits = self.plans[plan]
        status = BudgetStatus(plan=plan, limits=limits, spent=got.spent, reset_at=month_of(now)[1], held=got.holds)
        reason = status.shortfall(tokens, cost_micros) or f"the monthly limits of your plan {plan!r} do not cover it"
        raise _refusal(status, reason)

    async def release(self, user_id: str, response_id: str) -> None:
        await self.usage.release(user_id, response_id)


def _hold_of(raw: list[int]) -> Hold:
    outcome, st, sc, ht, hc = raw
    return Hold(int(outcome) != 0, MonthlySpend(int(st), int(sc)), MonthlySpend(int(ht), int(hc)))


class BudgetExceeded(RateLimited):
    """A request that does not fit what is left of the user's monthly budget: 429
    user_budget_exceeded, with the user's `status` (the gateway sends it as headers)."""

    code = "user_budget_exceeded"

    def __init__(self, message: str, *, status: BudgetStatus, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status


def _refusal(status: BudgetStatus, reason: str) -> BudgetExceeded:
    reset = dt.datetime.fromtimestamp(status.reset_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    retry_after = max(1, status.reset_at - int(time.time()))
    spent_alone = BudgetStatus(status.plan, status.limits, status.spent, status.reset_at)
    if status.held != MonthlySpend() and spent_alone.exhausted() is None:
        # What the other answers hold comes back when they end.
        retry_after = RETRY_WHILE_HELD_S
    return BudgetExceeded(f"{reason}; it resets at {reset}", status=status, retry_after_s=retry_after)


__all__ = [
    "DEFAULT_PLANS",
    "HOLD_TTL_S",
    "BudgetExceeded",
    "BudgetStatus",
    "Hold",
    "MonthlySpend",
    "MonthlyUsage",
    "PlanLimits",
    "PlanSettings",
    "ResponseRecord",
    "UserBudgets",
    "month_of",
]
