"""Parley's typed errors, mapped once to HTTP (gateway) and gRPC status codes (services).

    ParleyError
     ├── InvalidRequest        400  invalid_request        INVALID_ARGUMENT
     │    └── PayloadTooLarge  413  payload_too_large      INVALID_ARGUMENT
     ├── Unauthenticated       401  unauthenticated        UNAUTHENTICATED
     ├── NotFound              404  not_found              NOT_FOUND
     ├── Conflict              409  conflict               ALREADY_EXISTS
     ├── RateLimited           429  rate_limited           RESOURCE_EXHAUSTED
     └── Unavailable           503  unavailable            UNAVAILABLE

`code` may be narrowed per instance (e.g. `NotFound("…", code="conversation_not_found")`).
HTTP headers are the gateway's business (parley_gateway/errors.py): an error carries only
what they are made from (`retry_after_s`, a subclass's fields).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger(__name__)


class ParleyError(Exception):
    http_status = 500
    code = "internal"
    grpc_status = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        # When the same request may succeed, if known (the gateway sends it as Retry-After).
        self.retry_after_s = retry_after_s
        if code is not None:
            self.code = code


class InvalidRequest(ParleyError):
    http_status = 400
    code = "invalid_request"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(InvalidRequest):
    http_status = 413
    code = "payload_too_large"


class Unauthenticated(ParleyError):
    http_status = 401
    code = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class NotFound(ParleyError):
    http_status = 404
    code = "not_found"
    grpc_status = grpc.StatusCode.NOT_FOUND


class Conflict(ParleyError):
    http_status = 409
    code = "conflict"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS


class Gone(ParleyError):
    """What the request refers to existed but is no longer kept (e.g. an expired sync cursor)."""

    http_status = 410
    code = "gone"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(ParleyError):
    http_status = 429
    code = "rate_limited"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ParleyError):
    http_status = 503
    code = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE


_BY_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.FAILED_PRECONDITION: Gone,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


# What a client is told when the text of a failed call is not one of ours.
_PLAIN_MESSAGES: dict[type[ParleyError], str] = {
    InvalidRequest: "the request is not valid",
    Unauthenticated: "not authenticated",
    NotFound: "not found",
    Conflict: "conflict",
    Gone: "no longer available",
    RateLimited: "too many requests; try again shortly",
    Unavailable: "a service is unavailable; try again shortly",
}


def from_grpc(err: grpc.aio.AioRpcError) -> ParleyError:
    """Turn a failed gRPC call back into the typed error the server raised."""
    cls = _BY_GRPC.get(err.code(), ParleyError)
    details = err.details() or ""
    head, sep, rest = details.partition(": ")
    if sep and head.replace("_", "").isalnum() and head.islower():
        # Our servers send "code: message" (grpc_errors), both meant for the client, so the
        # narrow code survives the trip.
        code: str | None = head
        message = rest
    else:
        # gRPC's own text ("failed to connect to all addresses; …") or a server's unexpected
        # exception ("Unexpected <class 'ValueError'>: …"): for the logs, never for a client.
        log.warning("remote call failed", extra={"grpc_status": err.code().name, "details": details[:500]})
        code, message = None, _PLAIN_MESSAGES.get(cls, "internal error")
    if cls is InvalidRequest and code == PayloadTooLarge.code:
        # Both are INVALID_ARGUMENT on the wire; the client should still see 413.
        cls = PayloadTooLarge
    return cls(message, code=code)


Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def grpc_errors(method: Handler) -> Handler:
    """Decorate a gRPC servicer method: it runs in a server span continuing the caller's trace
    (from the call metadata), and a ParleyError it raises becomes its gRPC status."""
    from opentelemetry import trace

    from parley_common.observability.telemetry import context_from_metadata, tracer

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        parent = context_from_metadata(context.invocation_metadata())
        with tracer(method.__module__).start_as_current_span(
            method.__name__, context=parent, kind=trace.SpanKind.SERVER
        ):
            try:
                return await method(self, request, context)
            except ParleyError as err:
                await context.abort(err.grpc_status, f"{err.code}: {err.message}")

    return wrapper
