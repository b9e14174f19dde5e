"""A grpc.aio server with the standard health service, shared by the gRPC services."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Connections are closed (GOAWAY) after this age, so that clients balancing round-robin over a
# headless Service re-resolve it and spread onto pods that started since; calls running then
# get the grace to finish (longer than media's longest call, 180 s).
MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 4 * 60 * 1000


class GrpcServer:
    """Serves the given services plus grpc.health.v1; health says SERVING only once `ready()`."""

    def __init__(
        self,
        host: str,
        port: int,
        register: Callable[[grpc.aio.Server], None],
        max_connection_age_ms: int = MAX_CONNECTION_AGE_MS,
    ) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_connection_age_ms", max_connection_age_ms),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
            ]
        )
        register(self.server)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {host}:{port}")

    async def start(self) -> None:
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()

    async def ready(self, serving: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
