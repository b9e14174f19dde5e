"""One way to make a gRPC call: traced, with the trace context in metadata, errors typed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
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


def retrying_config(service: str, idempotent: Sequence[str], max_attempts: int, max_backoff_s: int) -> str:
    """A channel's service config: round-robin, and gRPC itself retries the `idempotent`
    methods of `service` (full name, e.g. parley.v1.HistoryService) while it is UNAVAILABLE."""
    return json.dumps(
        {
            "loadBalancingConfig": LOAD_BALANCING,
            "methodConfig": [
                {
                    "name": [{"service": service, "method": m} for m in idempotent],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": f"{max_backoff_s}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


class ServiceClient:
    """What every client of one of our gRPC services has: its channel (with `service_config`,
    retries on, and CHANNEL_OPTIONS), its health check, and calls made by `call`."""

    def __init__(
        self,
        service: str,
        target: str,
        service_config: str,
        timeout_s: float,
        options: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.service = service
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.service_config", service_config),
                ("grpc.enable_retries", 1),
                *options,
                *CHANNEL_OPTIONS,
            ],
        )
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any, timeout_s: float | None = None) -> T:
        return await call(self.service, method, request, timeout_s or self.timeout_s)

    async def serving(self) -> bool:
        """Whether the service's health check answers SERVING within a second."""
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
