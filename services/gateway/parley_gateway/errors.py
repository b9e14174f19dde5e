"""The one place errors become HTTP responses: `{"error": {"code", "message"}}`, never a trace,
with the headers that go with them (Retry-After, and a refusal's X-RateLimit-* or X-Budget-*)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException

from parley_common.budgets.users import BudgetExceeded
from parley_common.errors import ParleyError
from parley_common.observability.metrics import BUDGET_REJECTIONS

from .ratelimit import RequestRateExceeded, budget_headers

log = logging.getLogger(__name__)

# pydantic error type -> our code, for the first error of a request.
_VALIDATION_CODES = {
    "json_invalid": "invalid_json",
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "string_too_long": "too_long",
    "string_too_short": "too_short",
    "model_attributes_type": "invalid_json",
    "dict_type": "invalid_json",
}
# A lone surrogate ("\ud800") in a text, refused by pydantic itself or by schemas.Text: named
# whichever error comes first (in a union, the first is usually another member's type).
_UNICODE_ERRORS = frozenset({"string_unicode", "invalid_unicode"})
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_headers(exc: ParleyError) -> dict[str, str]:
    """The HTTP headers of an error's response."""
    headers: dict[str, str] = {}
    if isinstance(exc, RequestRateExceeded):
        headers.update(exc.rate_headers)
    elif isinstance(exc, BudgetExceeded):
        headers.update(budget_headers(exc.status))
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ParleyError)
    async def parley_error(_: Request, exc: ParleyError) -> JSONResponse:
        if exc.http_status == 429:
            BUDGET_REJECTIONS.labels(exc.code).inc()
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.http_status, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        code = _VALIDATION_CODES.get(str(first.get("type")), "invalid_request")
        if any(e.get("type") in _UNICODE_ERRORS for e in errors):
            code = "invalid_unicode"
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
            for e in errors[:20]
        ]
        return JSONResponse(error_body(code, "the request is not valid", details=details), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
        # Limits and streams live in Redis: without it nothing is admitted (fail closed).
        log.error("redis unavailable", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse(
            error_body("unavailable", "a dependency is unavailable; try again shortly"),
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse(error_body("internal", "internal error"), status_code=500)
