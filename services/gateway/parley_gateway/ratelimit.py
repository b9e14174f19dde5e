"""Per-user request rate limit (a fixed one-minute window in Redis, shared by all gateways),
and the X-RateLimit-* headers every authenticated response carries."""

from __future__ import annotations

import time

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_common.errors import RateLimited


class RequestRateLimit:
    def __init__(self, redis: Redis, namespace: str, per_minute: int) -> None:
        self.redis = redis
        self.namespace = namespace
        self.per_minute = per_minute

    async def check(self, user_id: str) -> dict[str, str]:
        """Count one request; the headers to send, or RateLimited when over the limit."""
        now = time.time()
        window = int(now // 60)
        reset = (window + 1) * 60
        key = f"{self.namespace}:rate:{user_id}:{window}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, 61)
            used, _ = await pipe.execute()
        headers = {
            "X-RateLimit-Limit": str(self.per_minute),
            "X-RateLimit-Remaining": str(max(0, self.per_minute - int(used))),
            "X-RateLimit-Reset": str(reset),
        }
        if int(used) > self.per_minute:
            retry_after = str(max(1, int(reset - now)))
            raise RateLimited(
                "too many requests; slow down", code="rate_limited", headers={**headers, "Retry-After": retry_after}
            )
        return headers


class RateLimitHeaders:
    """Adds the headers the auth dependency left in `request.state.rate_limit` to the response."""

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
