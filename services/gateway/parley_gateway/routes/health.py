"""Liveness (the process answers) and readiness (accepting, and connected to the broker).

Readiness is `parley_common.service.ops_server.Readiness`, the same JSON every service answers: Redis
and history are reported under `dependencies` but never make a gateway unready — one history
restart or a Redis failover would otherwise turn every gateway unready at once, and the edge
would answer 503 to everything (resumes and the web client included). The request that needs
one of them gets a retryable `unavailable` error instead.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from parley_common.service.ops_server import liveness

from ..deps import ReadinessDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return liveness("gateway")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus metrics of this gateway process."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    status, body = await readiness.report()
    return JSONResponse(body, status_code=status)
