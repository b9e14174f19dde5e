"""Media service process: MediaService over gRPC, on object storage.

Health: gRPC health (readiness) says SERVING once the bucket has been found (or created) the
first time, and stays SERVING while object storage is down: every media replica shares that
store, so turning them all unready would only move the failure to the edge. A call that needs
the store gets a retryable UNAVAILABLE (`storage_unavailable`) instead, and the operations port
(`PARLEY_METRICS_PORT`: /healthz for liveness, /readyz, /metrics) reports the store's state
under `dependencies`. A sweep removes presigned uploads never completed, a bounded batch every
`PARLEY_MEDIA_UPLOAD_SWEEP_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from parley.v1 import media_pb2_grpc
from parley_common.errors import ParleyError
from parley_common.service.grpc_server import GrpcServer
from parley_common.service.lifecycle import run_service, start_ops
from parley_common.service.ops_server import OpsServer
from parley_common.settings import load_settings

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


class StoreWatch:
    """Object storage as last seen: the bucket ensured every few seconds (created when missing)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.problem: str | None = "not checked yet"
        self.found_once = asyncio.Event()

    async def dependency(self) -> str | None:
        return self.problem

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.store.ensure_bucket()
                if self.problem is not None:
                    log.info("object storage reachable", extra={"bucket": self.store.bucket})
                self.problem = None
                self.found_once.set()
            except ParleyError as exc:
                if self.problem is None or not self.found_once.is_set():
                    log.warning("object storage not reachable", extra={"reason": exc.message})
                self.problem = f"object storage: {exc.message}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STORE_CHECK_S if self.problem is None else 0.5)


async def serve_when_store_found(watch: StoreWatch, server: GrpcServer, ops: OpsServer) -> None:
    """SERVING once the bucket was found the first time; from then on, whatever the store does."""
    await watch.found_once.wait()
    await server.ready()
    ops.mark_ready()
    log.info("ready", extra={"port": server.port, "bucket": watch.store.bucket})


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
    # /healthz (liveness: the process), /readyz (object storage reported, not gating), /metrics.
    ops = await start_ops("media", settings)
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
    watch = StoreWatch(store)
    ops.add_dependency("object_storage", watch.dependency)
    watcher = asyncio.create_task(watch.run(stop))
    serving = asyncio.create_task(serve_when_store_found(watch, server, ops))
    sweeper = asyncio.create_task(sweep_uploads(library, stop))
    await stop.wait()
    log.info("shutting down")
    ops.mark_stopping()
    # The store check may be waiting on an unreachable store (up to PARLEY_S3_TIMEOUT_S): not
    # worth a moment of the grace period.
    for task in (serving, watcher):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await sweeper
    # In-flight calls (an upload being processed) finish within the grace period.
    await server.stop(settings.shutdown_grace_s)
    await http.aclose()
    await asyncio.to_thread(cpu.shutdown)
    await asyncio.to_thread(videos.shutdown)
    store.close()
    await ops.stop()


def main() -> None:
    run_service(serve)
