"""One way to make a gRPC call: traced, with the trace context in metadata, errors typed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from .errors import from_grpc
from .telemetry import grpc_metadata, tracer

T = TypeVar("T")


async def call(service: str, method: Callable[..., Awaitable[T]], request: Any, timeout_s: float) -> T:
    """Call `method` with `request`; a failure raises the typed ParleyError the server meant."""
    name = f"{service}/{type(request).__name__.removesuffix('Request')}"
    with tracer(__name__).start_as_current_span(name, kind=trace.SpanKind.CLIENT):
        try:
            return await method(request, timeout=timeout_s, metadata=grpc_metadata())
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err) from None
