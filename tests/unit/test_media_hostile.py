"""Hostile media, processed by the media library on its real pools (object storage faked in
memory): video decode bombs, absurd frame rates, cancelled uploads, and images whose decoded
pixels would not fit in memory. Every hostile file is made here and is small on disk."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import av
import pytest
from PIL import Image, ImageDraw

from parley_common.errors import InvalidRequest
from parley_media.cpu_pool import CpuPool
from parley_media.generators import DemoImageGenerator
from parley_media.library import MediaLibrary
from parley_media.settings import MediaSettings
from parley_media.video_pool import VideoPool
from tests.support.media import alpha_png, decode_bomb_webm
from tests.support.polling import eventually


def fast_video(fps: int = 1000, frames: int = 2000, side: int = 64) -> bytes:
    """A tiny VP9 video at `fps` frames a second (a keyframe, then copies of one still frame)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_image(Image.new("RGB", (side, side), (200, 40, 40)))
        packets = []
        for i in range(4):
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode()
        for i in range(frames):
            packet = av.Packet(bytes(packets[0] if i == 0 else packets[-1]))
            packet.pts = packet.dts = i
            packet.time_base = packets[0].time_base
            packet.stream = stream
            packet.is_keyframe = i == 0
            container.mux(packet)
    return buffer.getvalue()


def huge_png(side: int = 7000) -> bytes:
    """A side x side RGBA PNG of a few flat shapes: ~200 kB on disk, ~200 MB once decoded."""
    picture = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse((side // 5, side // 5, side * 4 // 5, side * 4 // 5), fill=(30, 160, 90, 255))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


class MemoryStore:
    """Enough of ObjectStore for ingest: objects kept in a dict."""

    bucket = "test"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = data

    async def put_json(self, key: str, value: Any) -> None:
        self.objects[key] = repr(value).encode()


def library_with(**settings: Any) -> MediaLibrary:
    config = MediaSettings(**settings)
    cpu = CpuPool(config.media_workers, config.media_max_concurrent_jobs, config.media_memory_budget_bytes)
    videos = VideoPool(config.media_video_workers, config.media_video_deadline_s, config.media_video_memory_bytes)
    return MediaLibrary(config, MemoryStore(), cpu, DemoImageGenerator(cpu), videos)  # type: ignore[arg-type]


def close(library: MediaLibrary) -> None:
    library.cpu.shutdown()
    library.videos.shutdown()


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return decode_bomb_webm()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


def decoding(library: MediaLibrary) -> Callable[[], Awaitable[set[int]]]:
    """A check: the video processes running now (none: falsy)."""

    async def running() -> set[int]:
        return library.videos.running_pids()

    return running


def gone(pids: set[int]) -> Callable[[], Awaitable[bool]]:
    """A check: none of `pids` is alive."""

    async def none_alive() -> bool:
        return not any(alive(pid) for pid in pids)

    return none_alive


async def test_a_video_decode_bomb_neither_runs_long_nor_starves_another_users_image(bomb: bytes) -> None:
    library = library_with(media_workers=2, media_max_concurrent_jobs=4)
    try:
        started = time.monotonic()
        bombs = [asyncio.create_task(library.ingest("mallory", bomb, "video/webm")) for _ in range(2)]
        await eventually(decoding(library), 20, "a video being decoded", interval_s=0.02)
        small = time.monotonic()
        image = await asyncio.wait_for(library.ingest("alice", alpha_png(64, 48), "image/png"), 20)
        image_s = time.monotonic() - small
        assert image.kind == "image"
        outcomes = await asyncio.wait_for(asyncio.gather(*bombs, return_exceptions=True), 90)
        bombs_s = time.monotonic() - started
        for outcome in outcomes:
            # Either sampled within the decode budget, or stopped at the deadline: never a minute of CPU.
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, InvalidRequest) and outcome.code == "media_too_complex", outcome
            else:
                assert outcome.kind == "video"
        print(f"small image {image_s:.2f} s behind two bombs; both bombs done in {bombs_s:.1f} s")
    finally:
        close(library)


async def test_a_video_past_its_deadline_is_killed_with_a_typed_error(bomb: bytes) -> None:
    # An unbounded decode budget, so only the deadline stops it.
    library = library_with(media_video_deadline_s=1.0, media_video_decode_pixels=10**12)
    seen: set[int] = set()
    try:
        job = asyncio.create_task(library.ingest("mallory", bomb, "video/webm"))
        while not job.done():
            seen.update(library.videos.running_pids())
            await asyncio.sleep(0.02)
        with pytest.raises(InvalidRequest) as refused:
            await job
        assert refused.value.code == "media_too_complex"
        assert seen, "the video was not decoded in a child process"
        await eventually(gone(seen), 0.5, "the decode ended with its deadline")
    finally:
        close(library)


async def test_a_cancelled_video_upload_stops_its_decode(bomb: bytes) -> None:
    library = library_with(media_video_deadline_s=120.0, media_video_decode_pixels=10**12)
    try:
        job = asyncio.create_task(library.ingest("mallory", bomb, "video/webm"))
        await eventually(decoding(library), 20, "a decode process started", interval_s=0.02)
        assert not job.done()
        pids = library.videos.running_pids()
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        await eventually(gone(pids), 5, "the decode stopped with the cancelled request")
    finally:
        close(library)


async def test_a_video_at_1000_frames_a_second_is_refused() -> None:
    library = library_with()
    try:
        with pytest.raises(InvalidRequest) as refused:
            await library.ingest("mallory", fast_video(), "video/webm")
        assert refused.value.code == "media_too_complex"
    finally:
        close(library)


@pytest.fixture(scope="module")
def big_png() -> bytes:
    return huge_png()


@pytest.fixture
def rss_peak() -> Iterator[list[int]]:
    """[peak RSS] of this process, sampled every 10 ms while the test runs."""
    peak = [rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    yield peak
    stop.set()
    sampler.join()


async def test_big_pngs_wait_for_the_memory_budget_and_their_memory_is_given_back(
    big_png: bytes, rss_peak: list[int]
) -> None:
    assert len(big_png) < 400_000
    library = library_with(media_workers=4, media_max_concurrent_jobs=4, media_memory_budget_bytes=500_000_000)
    try:
        before = rss_bytes()
        rss_peak[0] = before
        started = time.monotonic()
        results = await asyncio.gather(*(library.ingest(f"user{i}", big_png, "image/png") for i in range(4)))
        took = time.monotonic() - started
        assert all((r.width, r.height) == (7000, 7000) for r in results)
        await asyncio.sleep(0.2)  # a moment for the memory the jobs freed to go back
        peak, after = rss_peak[0] - before, rss_bytes() - before
        print(f"4 x 7000x7000 RGBA PNG: {took:.1f} s, peak +{peak / 1e6:.0f} MB, after +{after / 1e6:.0f} MB")
        # Each holds ~200 MB decoded: the budget lets two run at once, not four (~1 GB).
        assert peak < 700_000_000, f"peak RSS grew by {peak / 1e6:.0f} MB"
        assert after < 250_000_000, f"RSS stayed {after / 1e6:.0f} MB higher after the jobs"
    finally:
        close(library)


async def test_an_image_that_can_never_fit_the_memory_budget_is_refused_before_decoding(big_png: bytes) -> None:
    library = library_with(media_memory_budget_bytes=100_000_000)
    try:
        started = time.monotonic()
        with pytest.raises(InvalidRequest) as refused:
            await library.ingest("mallory", big_png, "image/png")
        assert refused.value.code == "image_too_large"
        assert time.monotonic() - started < 5
        assert not library.store.objects  # type: ignore[attr-defined]
    finally:
        close(library)


def test_hostile_files_are_small_on_disk(bomb: bytes) -> None:
    assert len(bomb) < 200_000 and len(fast_video()) < 200_000
