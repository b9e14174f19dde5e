"""One way to make a gRPC call: traced, with the trace context in metadata, errors typed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace

from parley_common.errors import from_grpc
from parley_common.observability.telemetry import grpc_metadata, tracer

T = TypeVar("T")

# Client-side load balancing: with a `dns:///<headless Service>:<port>` target the resolver
# returns every pod's address and calls go round-robin over them; behind one virtual IP a
# channel would keep its one HTTP/2 connection to one pod, and pods added by a rollout or a
# scale-up would get no calls. The servers close connections after a maximum age
# (grpc_server.py), so clients re-resolve and find the new pods.
LOAD_BALANCING: list[dict[str, dict[str, object]]] = [{"round_robin": {}}]
# Channel options of every client: a server that was away (a restart, a rollout) is dialled
# again within 2 s of its return, not after gRPC's default back-off of up to 120 s. Round-robin
# keeps reconnecting a lost pod on that back-off (pick-first waited for the next call), so a
# call also waits for a ready connection (`wait_for_ready`) within its deadline instead of
# failing at once while the only pod restarts.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


async def call(service: str, method: Callable[..., Awaitable[T]], request: Any, timeout_s: float) -> T:
    """Call `method` with `request`; a failure raises the typed ParleyError the server meant."""
    name = f"{service}/{type(request).__name__.removesuffix('Request')}"
    with tracer(__name__).start_as_current_span(name, kind=trace.SpanKind.CLIENT):
        try:
            return await method(request, timeout=timeout_s, metadata=grpc_metadata(), wait_for_ready=True)
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err) from None
