"""Media service process."""

from __future__ import annotations

import asyncio
import logging

from parley_common.grpc_server import GrpcServer
from parley_common.lifecycle import run_service
from parley_common.logs import setup_logging
from parley_common.settings import load_settings
from parley_common.telemetry import setup_telemetry

from .settings import MediaSettings

log = logging.getLogger("parley.media")


async def serve(stop: asyncio.Event) -> None:
    settings = load_settings(MediaSettings)
    setup_logging("media", settings.log_level)
    setup_telemetry("media", settings.otlp_endpoint)
    server = GrpcServer(settings.media_grpc_host, settings.media_grpc_port, lambda _server: None)
    await server.start()
    await server.ready()
    log.info("ready", extra={"port": server.port})
    await stop.wait()
    await server.stop(settings.shutdown_grace_s)


def main() -> None:
    run_service(serve)
