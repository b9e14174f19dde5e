"""Per-user monthly limits on tokens and cost, shared by every gateway and orchestrator.

Each user has a plan (configured at the gateway: PARLEY_PLANS, PARLEY_USER_PLANS,
PARLEY_DEFAULT_PLAN) with a monthly token limit and a monthly cost limit in micro-dollars.
Months are calendar months in UTC; usage resets at 00:00 UTC on the first of the next month.

- The gateway checks before it publishes a request: a user with no budget left gets 429
  `user_budget_exceeded` (with Retry-After and the reset time) and nothing is spent.
- Generated images have a known price (the registry's `images`): the gateway also refuses a
  generation whose price is more than the cost left (429 `user_budget_exceeded`). There is no
  reservation: it checks, then the images are charged once generated (the OpenAI-compatible
  endpoint charges each image it returns; a chat `/image` turn is charged with its answer).
- The orchestrator charges each answer's usage, as the provider reported it, when the answer
  completes (ResponseCompleted). The charge is idempotent per response (a marker key), so a
  redelivered event is not charged twice.

Overshoot bound: a request is admitted while any budget is left, and answers are charged when
they finish, so a user can go over by what the answers running at that moment use: at most
PARLEY_MAX_STREAMS_PER_USER answers (default 20), each at most its model's context window in
tokens (prompt and answer together), and those tokens' price in cost. With the demo registry
(8,192-token window) that is 20 * 8,192 = 163,840 tokens. Image generations are checked
against their price but not reserved, so those running at once can each pass the check: the
cost overshoot is at most PARLEY_MAX_STREAMS_PER_USER generations (each holds a stream slot) of
at most 4 images at the highest image price.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from .errors import RateLimited

# KEYS[1] = the user's usage hash for the month, KEYS[2] = the response's charge marker.
# ARGV = tokens, cost_micros, marker ttl ms, usage ttl ms. Returns 1 when charged, 0 if it was before.
_CHARGE = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'cost_micros', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return 1
end
return 0
"""
_MARKER_TTL_MS = 7 * 24 * 3600 * 1000
_USAGE_TTL_MS = 62 * 24 * 3600 * 1000  # the month and the next: enough to answer questions about it


class PlanLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # None: no limit.
    monthly_tokens: int | None = Field(default=None, ge=0)
    monthly_cost_micros: int | None = Field(default=None, ge=0)


DEFAULT_PLANS = {"default": PlanLimits(monthly_tokens=10_000_000, monthly_cost_micros=50_000_000)}


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

    @property
    def tokens_remaining(self) -> int | None:
        limit = self.limits.monthly_tokens
        return None if limit is None else max(0, limit - self.spent.tokens)

    @property
    def cost_remaining_micros(self) -> int | None:
        limit = self.limits.monthly_cost_micros
        return None if limit is None else max(0, limit - self.spent.cost_micros)

    def exhausted(self) -> str | None:
        """Which limit is used up ("tokens" or "cost"), or None."""
        if self.tokens_remaining == 0:
            return "tokens"
        if self.cost_remaining_micros == 0:
            return "cost"
        return None

    def headers(self) -> dict[str, str]:
        out = {"X-Budget-Plan": self.plan, "X-Budget-Reset": str(self.reset_at)}
        if self.tokens_remaining is not None:
            out["X-Budget-Tokens-Remaining"] = str(self.tokens_remaining)
        if self.cost_remaining_micros is not None:
            out["X-Budget-Cost-Remaining-Micros"] = str(self.cost_remaining_micros)
        return out


class MonthlyUsage:
    """The Redis ledger of what each user spent per month."""

    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._charge = redis.register_script(_CHARGE)

    def key(self, user_id: str, month: str) -> str:
        return f"{self.namespace}:user-usage:{user_id}:{month}"

    def marker_key(self, response_id: str) -> str:
        return f"{self.namespace}:user-charged:{response_id}"

    async def spent(self, user_id: str, now: float | None = None) -> MonthlySpend:
        month, _ = month_of(time.time() if now is None else now)
        tokens, cost = await self.redis.hmget(self.key(user_id, month), ["tokens", "cost_micros"])
        return MonthlySpend(int(tokens or 0), int(cost or 0))

    async def charge(
        self, response_id: str, user_id: str, tokens: int, cost_micros: int, now: float | None = None
    ) -> bool:
        """Add one answer's usage to its user's month; False when this response was charged before."""
        month, _ = month_of(time.time() if now is None else now)
        charged = await self._charge(
            keys=[self.key(user_id, month), self.marker_key(response_id)],
            args=[max(0, tokens), max(0, cost_micros), _MARKER_TTL_MS, _USAGE_TTL_MS],
        )
        return bool(charged)


class UserBudgets:
    """Plans and the ledger: what a user may still spend this month."""

    def __init__(
        self, usage: MonthlyUsage, plans: dict[str, PlanLimits], user_plans: dict[str, str], default_plan: str
    ) -> None:
        self.usage = usage
        self.plans = plans
        self.user_plans = user_plans
        self.default_plan = default_plan

    def plan_of(self, user_id: str) -> str:
        return self.user_plans.get(user_id, self.default_plan)

    async def status(self, user_id: str) -> BudgetStatus:
        now = time.time()
        plan = self.plan_of(user_id)
        spent = await self.usage.spent(user_id, now)
        return BudgetStatus(plan=plan, limits=self.plans[plan], spent=spent, reset_at=month_of(now)[1])

    async def check(self, user_id: str, cost_micros: int = 0) -> BudgetStatus:
        """The user's status; raises RateLimited (429 user_budget_exceeded) when a limit is used
        up, or when what is left of the cost limit is less than `cost_micros`: the known price of
        the request (generated images), charged by the caller once it is done."""
        status = await self.status(user_id)
        exhausted = status.exhausted()
        remaining = status.cost_remaining_micros
        reset = dt.datetime.fromtimestamp(status.reset_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if exhausted is not None:
            message = f"the monthly {exhausted} limit of your plan {status.plan!r} is used up; it resets at {reset}"
        elif remaining is not None and cost_micros > remaining:
            message = (
                f"this request costs {cost_micros} micro-dollars, more than the {remaining} left of the monthly "
                f"cost limit of your plan {status.plan!r}; it resets at {reset}"
            )
        else:
            return status
        retry_after = max(1, status.reset_at - int(time.time()))
        raise RateLimited(
            message, code="user_budget_exceeded", headers={**status.headers(), "Retry-After": str(retry_after)}
        )


class HeaderCheck(Protocol):
    async def check(self, user_id: str) -> dict[str, str]: ...


class WithBudgetHeaders:
    """The gateway's per-request rate limit, with the user's budget added to the headers it
    returns (the gateway sends them on every authenticated response)."""

    def __init__(self, rate_limit: HeaderCheck, budgets: UserBudgets) -> None:
        self.rate_limit = rate_limit
        self.budgets = budgets

    async def check(self, user_id: str) -> dict[str, str]:
        # Both reads in one round trip's time (the budget read has no side effect to undo).
        headers, status = await asyncio.gather(self.rate_limit.check(user_id), self.budgets.status(user_id))
        return {**headers, **status.headers()}


__all__ = [
    "DEFAULT_PLANS",
    "BudgetStatus",
    "MonthlySpend",
    "MonthlyUsage",
    "PlanLimits",
    "UserBudgets",
    "WithBudgetHeaders",
    "month_of",
]
