"""Media service process: MediaService over gRPC, on object storage.

Readiness follows object storage: health says SERVING once the bucket is there, and goes back
to NOT_SERVING while the store cannot be reached. A sweep removes presigned uploads never
completed, a bounded batch every `PARLEY_MEDIA_UPLOAD_SWEEP_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from parley.v1 import media_pb2_grpc
from parley_common.errors import ParleyError
from parley_common.grpc_server import GrpcServer
from parley_common.lifecycle import run_service
from parley_common.logs import setup_logging
from parley_common.settings import load_settings
from parley_common.telemetry import setup_telemetry

from .cpu_pool import CpuPool
from .generators import DemoImageGenerator, ImageGenerator, OpenAIImageGenerator
from .grpc_api import MediaServicer
from .library import MediaLibrary
from .objects import ObjectStore
from .settings import MediaSettings
from .video_pool import VideoPool

log = logging.getLogger("parley.media")

STORE_CHECK_S = 5.0


def build_generator(settings: MediaSettings, cpu: CpuPool, http: httpx.AsyncClient) -> ImageGenerator:
    if settings.image_generator == "openai" and settings.image_generation_api_key is not None:
        return OpenAIImageGenerator(
            base_url=settings.image_generation_base_url,
            api_key=settings.image_generation_api_key.get_secret_value(),
            model=settings.image_generation_model,
            client=http,
            max_bytes=settings.media_max_upload_bytes,
        )
    return DemoImageGenerator(cpu)


async def watch_store(store: ObjectStore, server: GrpcServer, stop: asyncio.Event) -> None:
    """Keep health in step with object storage (creating the bucket when it is missing)."""
    serving: bool | None = None
    while not stop.is_set():
        try:
            await store.ensure_bucket()
            reachable = True
        except ParleyError as exc:
            reachable = False
            if serving is not False:
                log.warning("object storage not reachable", extra={"reason": exc.message})
        if reachable != serving:
            await server.ready(reachable)
            if reachable:
                log.info("ready", extra={"port": server.port, "bucket": store.bucket})
            serving = reachable
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STORE_CHECK_S if reachable else 0.5)


async def sweep_uploads(library: MediaLibrary, stop: asyncio.Event) -> None:
    """Remove uploads past their expiry and grace, one bounded pass per interval; every replica
    may sweep (deleting twice is harmless)."""
    cursor = ""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), library.settings.media_upload_sweep_interval_s)
        if stop.is_set():
            break
        try:
            cursor = await library.sweep_uploads(cursor)
        except ParleyError as exc:
            log.warning("upload sweep failed", extra={"reason": exc.message})


async def serve(stop: asyncio.Event) -> None:
    settings = load_settings(MediaSettings)
    setup_logging("media", settings.log_level)
    setup_telemetry("media", settings.otlp_endpoint)
    store = ObjectStore(
        endpoint=settings.s3_endpoint,
        public_endpoint=settings.s3_public_endpoint,
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
        secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
        timeout_s=settings.s3_timeout_s,
    )
    cpu = CpuPool(settings.media_workers, settings.media_max_concurrent_jobs, settings.media_memory_budget_bytes)
    videos = VideoPool(settings.media_video_workers, settings.media_video_deadline_s, settings.media_video_memory_bytes)
    http = httpx.AsyncClient(timeout=httpx.Timeout(settings.image_generation_timeout_s, connect=10.0))
    library = MediaLibrary(settings, store, cpu, build_generator(settings, cpu, http), videos)
    servicer = MediaServicer(library)
    server = GrpcServer(
        settings.media_grpc_host,
        settings.media_grpc_port,
        lambda s: media_pb2_grpc.add_MediaServiceServicer_to_server(servicer, s),
    )
    await server.start()
    log.info("grpc listening", extra={"port": server.port, "generator": library.generator.name})
    watcher = asyncio.create_task(watch_store(store, server, stop))
    sweeper = asyncio.create_task(sweep_uploads(library, stop))
    await stop.wait()
    log.info("shutting down")
    await watcher
    await sweeper
    # In-flight calls (an upload being processed) finish within the grace period.
    await server.stop(settings.shutdown_grace_s)
    await http.aclose()
    await asyncio.to_thread(cpu.shutdown)
    await asyncio.to_thread(videos.shutdown)
    store.close()


def main() -> None:
    run_service(serve)
