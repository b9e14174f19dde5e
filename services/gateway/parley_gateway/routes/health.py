"""Liveness (cheap) and readiness (every dependency reachable)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state

    async def redis_ok() -> bool:
        try:
            return bool(await asyncio.wait_for(state.redis.ping(), 1.0))
        except Exception:
            return False

    history_ok, redis_up = await asyncio.gather(state.history.serving(), redis_ok())
    checks: dict[str, Any] = {
        "broker": not state.amqp.is_closed,
        "redis": redis_up,
        "history": history_ok,
        "accepting": not state.stopping,
    }
    ready = all(checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
