"""Per-user request rate limit (a fixed one-minute window in Redis, shared by all gateways), and
the headers every authenticated response carries: X-RateLimit-* (this limit) and X-Budget-*
(what is left of the user's monthly budget)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_common.budgets.users import BudgetStatus, UserBudgets
from parley_common.errors import RateLimited


class RequestRateExceeded(RateLimited):
    """429 rate_limited: more requests this minute than the user may send; `rate_headers` are
    the X-RateLimit-* headers of the refusal."""

    code = "rate_limited"

    def __init__(self, rate_headers: dict[str, str], retry_after_s: int) -> None:
        super().__init__("too many requests; slow down", retry_after_s=retry_after_s)
        self.rate_headers = rate_headers


class RequestRateLimit:
    def __init__(self, redis: Redis, namespace: str, per_minute: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.per_minute = per_minute

    async def check(self, user_id: str) -> dict[str, str]:
        """Count one request; the X-RateLimit-* headers to send, or RequestRateExceeded when
        over the limit."""
        async with self.redis.pipeline(transaction=False) as pipe:
            headers_of = self.queue(pipe, user_id)
            used, _ = await pipe.execute()
        return headers_of(used)

    def queue(self, pipe: Pipeline, user_id: str) -> Callable[[Any], dict[str, str]]:
        """`check` as two commands (INCR, EXPIRE) of the caller's pipeline; returns what makes
        the headers of the INCR's reply (or raises RequestRateExceeded)."""
        now = time.time()
        window = int(now // 60)
        key = f"{self.namespace}:rate:{user_id}:{window}"
        pipe.incr(key)
        pipe.expire(key, 61)
        return functools.partial(self._headers, now)

    def _headers(self, now: float, used: Any) -> dict[str, str]:
        if isinstance(used, Exception):
            raise used
        reset = (int(now // 60) + 1) * 60
        headers = {
            "X-RateLimit-Limit": str(self.per_minute),
            "X-RateLimit-Remaining": str(max(0, self.per_minute - int(used))),
            "X-RateLimit-Reset": str(reset),
        }
        if int(used) > self.per_minute:
            raise RequestRateExceeded(headers, retry_after_s=max(1, int(reset - now)))
        return headers


def budget_headers(status: BudgetStatus) -> dict[str, str]:
    """X-Budget-*: the user's plan, when its month resets, and what is left of each limit it has."""
    out = {"X-Budget-Plan": status.plan, "X-Budget-Reset": str(status.reset_at)}
    if status.tokens_remaining is not None:
        out["X-Budget-Tokens-Remaining"] = str(status.tokens_remaining)
    if status.cost_remaining_micros is not None:
        out["X-Budget-Cost-Remaining-Micros"] = str(status.cost_remaining_micros)
    return out


class RequestCounter:
    """Counts one request of a user against their rate limit; the headers its response carries
    (the rate limit's and the user's budget's)."""

    def __init__(self, rate_limit: RequestRateLimit, budgets: UserBudgets) -> None:
        self.rate_limit = rate_limit
        self.budgets = budgets

    async def count(self, user_id: str) -> dict[str, str]:
        # Both in one round trip (the budget read has no side effect to undo).
        async with self.rate_limit.redis.pipeline(transaction=False) as pipe:
            headers_of = self.rate_limit.queue(pipe, user_id)
            status_of = self.budgets.queue_status(pipe, user_id)
            used, expired, state = await pipe.execute(raise_on_error=False)
        headers = headers_of(used)
        if isinstance(expired, Exception):
            raise expired
        return {**headers, **budget_headers(await status_of(state))}


class RateLimitHeaders:
    """Adds the headers the rate-limit dependency left in `request.state.rate_limit` to the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: dict[str, str] = scope.get("state", {}).get("rate_limit", {})
                if headers:
                    existing = {k.lower() for k, _ in message.get("headers", [])}
                    extra = [
                        (k.lower().encode(), v.encode())
                        for k, v in headers.items()
                        if k.lower().encode() not in existing
                    ]
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
