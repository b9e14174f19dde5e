from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator, model_validator

from parley_common.settings import CommonSettings

MB = 1_000_000
CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path | None = None) -> int:
    """The CPUs this process may use: its container's CPU limit (cgroup v2 `cpu.max`, or v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`) rounded up, else the CPUs it is allowed to run on.
    A pod limited to 1 CPU on a 64-core node gets 1, not 64 (threads beyond the limit only queue
    and are throttled)."""
    root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota: float | None = None
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:
            limit_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = limit_us / period_us if limit_us > 0 and period_us > 0 else None
        except (OSError, ValueError):
            quota = None
    if quota is not None and quota > 0:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


class MediaSettings(CommonSettings):
    media_grpc_host: str = "127.0.0.1"
    media_grpc_port: int = Field(default=50052, ge=0, le=65535)

    # Object storage (S3 API): MinIO in production, any S3-compatible server in tests.
    s3_endpoint: str = "http://127.0.0.1:9000"
    # What clients and providers are given in presigned URLs, when they reach the store at
    # another address than this service does (an ingress, a CDN in front of MinIO).
    s3_public_endpoint: str | None = None
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    s3_bucket: str = Field(default="parley-media", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    s3_timeout_s: float = Field(default=30.0, gt=0, le=600)

    # Uploads (direct and presigned) larger than this are refused (413).
    media_max_upload_bytes: int = Field(default=20 * MB, ge=1024, le=500 * MB)
    # Images with more pixels than this are refused as decompression bombs.
    media_max_pixels: int = Field(default=50_000_000, ge=1_000_000, le=500_000_000)
    media_high_px: int = Field(default=2048, ge=256, le=8192)
    media_low_px: int = Field(default=1024, ge=128, le=4096)
    media_thumb_px: int = Field(default=256, ge=32, le=1024)
    media_output_format: Literal["webp", "jpeg"] = "webp"
    media_quality: int = Field(default=82, ge=30, le=100)
    # WebP encoder effort, 0 (fast) .. 6 (smallest).
    media_webp_method: int = Field(default=2, ge=0, le=6)
    # Videos: longest accepted, and how many frames are sampled for image-only providers.
    media_max_video_s: float = Field(default=120.0, gt=0, le=3600)
    media_video_frames: int = Field(default=4, ge=1, le=16)
    # Threads for decoding and encoding (Pillow and PyAV release the GIL while they work).
    # Default: the CPUs of the container's limit (`available_cpus`, at least 2), not the node's.
    media_workers: int = Field(default_factory=lambda: min(64, max(2, available_cpus())), ge=1, le=64)
    # Images being processed at once; each may hold its bytes and decoded frames.
    media_max_concurrent_jobs: int = Field(default=4, ge=1, le=256)
    # Decoded image bytes in flight across all jobs (estimated from each header before it is
    # decoded): a job waits until its share fits, and an image that could never fit is refused.
    media_memory_budget_bytes: int = Field(default=640 * MB, ge=64 * MB, le=64_000 * MB)
    # Videos are decoded in child processes of their own (never on the image threads): at most
    # this many at once, each killed past the deadline (wall clock and CPU) or its address-space
    # limit, which answers `media_too_complex`.
    media_video_workers: int = Field(default=1, ge=1, le=16)
    media_video_deadline_s: float = Field(default=30.0, ge=1.0, le=600.0)
    media_video_memory_bytes: int = Field(default=2_000 * MB, ge=512 * MB, le=64_000 * MB)
    # Frames a second (counted from the packets) past which a video is refused, and decoded
    # pixels per sampled frame: a sample stops at this budget instead of decoding a whole GOP.
    media_video_max_fps: float = Field(default=120.0, ge=1.0, le=1000.0)
    media_video_decode_pixels: int = Field(default=100_000_000, ge=1_000_000, le=10**12)

    # Presigned URLs: for clients (GET), for uploads (PUT), for providers fetching a prompt's images.
    media_url_expiry_s: int = Field(default=900, ge=60, le=7 * 86_400)
    media_upload_expiry_s: int = Field(default=900, ge=1, le=86_400)
    # Uploads never completed: removed (record and object) this long after their expiry, by a
    # sweep every interval that looks at no more than `batch` objects a pass.
    media_upload_sweep_interval_s: float = Field(default=300.0, ge=0.1, le=86_400)
    media_upload_sweep_grace_s: int = Field(default=3600, ge=0, le=7 * 86_400)
    media_upload_sweep_batch: int = Field(default=1000, ge=1, le=100_000)
    media_provider_url_expiry_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    # One prompt's inline image bytes (a gRPC reply, then an AMQP message, carries them).
    media_prompt_max_images: int = Field(default=16, ge=1, le=64)
    media_prompt_max_inline_bytes: int = Field(default=6 * MB, ge=MB, le=7 * MB)

    # Image generation: the embedded demo generator, or an OpenAI Images API.
    image_generator: Literal["demo", "openai"] = "demo"
    image_generation_base_url: str = "https://api.openai.com/v1"
    image_generation_api_key: SecretStr | None = None
    image_generation_model: str = Field(default="gpt-image-1.5", min_length=1, max_length=64)
    image_generation_timeout_s: float = Field(default=120.0, gt=0, le=600)

    @field_validator("s3_endpoint", "s3_public_endpoint", "image_generation_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> MediaSettings:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError("set both PARLEY_S3_ACCESS_KEY and PARLEY_S3_SECRET_KEY, or neither")
        if not self.media_thumb_px < self.media_low_px <= self.media_high_px:
            raise ValueError("sizes must grow: PARLEY_MEDIA_THUMB_PX < PARLEY_MEDIA_LOW_PX <= PARLEY_MEDIA_HIGH_PX")
        if self.image_generator == "openai" and self.image_generation_api_key is None:
            raise ValueError("PARLEY_IMAGE_GENERATOR=openai needs PARLEY_IMAGE_GENERATION_API_KEY")
        return self
