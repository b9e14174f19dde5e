"""Image uploads: the media service's pipeline vs plain Pillow, on the same camera-size JPEG.

The source is made here, in memory: a photo-like 4000x3000 picture (smooth colour fields,
shapes, a blur like a lens's, per-channel sensor noise, so it compresses like a photo) saved
as a JPEG at quality 90 with EXIF orientation 6 (shown rotated), a camera make and model, a
capture date and a GPS position; and the same at 6000x4500 (27 MP).

Both sides make the renditions the service stores (fit in 2048, 1024 and 256 px, WebP at the
service's quality and encoder effort) from the same bytes:

- plain: Pillow the straightforward way: `Image.open`, `load()` (a full-size decode), then
  for each size a Lanczos `resize` of the full image (no `draft()`, no reducing gap) and a
  WebP `save`. It ignores the EXIF orientation (its renditions are sideways) and writes no
  metadata.
- ours: what an upload goes through in the media service, minus S3 and the worker thread:
  `identify` (the bytes' type) then `process_image` (pixel limit, EXIF orientation, `draft()`
  for JPEG, sRGB, each rendition resized from the one before with a reducing gap, encoded
  from its pixels alone).

Each side runs in its own fresh process, both alive at once and driven in turn (one run of
one, then one of the other, the order swapped every round) so that other work on the
machine weighs on both alike. Times are taken in those processes around the call alone.
Peak memory is the process's high-water mark (VmHWM) minus that of an idle process with the
same imports and the same source bytes in memory: Pillow allocates its pixels outside
Python's allocator, so tracemalloc would not see them. Fidelity: the PSNR of each side's
2048 px WebP against an exact rendition (full decode, upright, one Lanczos resize).
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps, ImageStat

from parley_media.images import Encoded, ImageLimits, fit, process_image
from parley_media.settings import MediaSettings
from parley_media.sniffing import SNIFF_BYTES, identify

from .stats import summary_ms, write

SIZES = ((4000, 3000), (6000, 4500))
WARMUP = 1
RUNS = 15
SOURCE_QUALITY = 90
ORIENTATION = 6  # the camera was held upright: shown rotated 90° clockwise
REPO = Path(__file__).resolve().parent.parent


def camera_jpeg(width: int, height: int, seed: int = 12) -> bytes:
    """A photo-like JPEG with the EXIF a phone writes (orientation, make, model, date, GPS)."""
    rng = random.Random(seed)
    fields = Image.new("RGB", (8, 6))
    fields.putdata([(rng.randrange(30, 230), rng.randrange(30, 230), rng.randrange(30, 230)) for _ in range(48)])
    picture = fields.resize((width, height), Image.Resampling.BICUBIC)
    texture = Image.effect_noise((width // 8, height // 8), 40).resize((width, height), Image.Resampling.BICUBIC)
    picture = ImageChops.overlay(picture, Image.merge("RGB", (texture, texture, texture)))
    draw = ImageDraw.Draw(picture)
    for _ in range(60):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(width // 80, width // 8)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.polygon([(x + rng.randrange(-r, r), y + rng.randrange(-r, r)) for _ in range(5)], fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(2))
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 10) for _ in range(3)])
    picture = ImageChops.add(picture, noise, 1.0, -128)
    exif = Image.Exif()
    exif[0x0112] = ORIENTATION
    exif[0x010F] = "ParleyCam"  # Make
    exif[0x0110] = "Bench 12"  # Model
    exif.get_ifd(0x8769)[0x9003] = "2026:11:27 09:15:00"  # DateTimeOriginal
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.0)})
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=SOURCE_QUALITY, exif=exif)
    return buffer.getvalue()


def service_limits() -> ImageLimits:
    """The limits the media service runs with, from its settings (as MediaLibrary builds them)."""
    s = MediaSettings()
    return ImageLimits(
        max_pixels=s.media_max_pixels,
        high_px=s.media_high_px,
        low_px=s.media_low_px,
        thumb_px=s.media_thumb_px,
        output_format=s.media_output_format,
        quality=s.media_quality,
        webp_method=s.media_webp_method,
    )


def ours(data: bytes, limits: ImageLimits) -> list[Encoded]:
    """The upload path of the media service (MediaLibrary.ingest) without storage."""
    file_type = identify(data[:SNIFF_BYTES], "image/jpeg")
    return process_image(data, file_type, limits).renditions


def plain(data: bytes, limits: ImageLimits) -> list[Encoded]:
    """Plain Pillow: full decode, then every size resized from the full image and saved."""
    renditions = []
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        for name, box in (("high", limits.high_px), ("low", limits.low_px), ("thumb", limits.thumb_px)):
            resized = image.resize(fit(image.size, box), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            resized.save(buffer, "WEBP", quality=limits.quality, method=limits.webp_method)
            renditions.append(Encoded(name, buffer.getvalue(), "image/webp", resized.width, resized.height))
    return renditions


SIDES: dict[str, Callable[[bytes, ImageLimits], list[Encoded]] | None] = {"plain": plain, "ours": ours, "idle": None}


def _peak_rss_kb() -> int:
    """This process's resident-memory high-water mark, in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _worker(side: str, source: Path) -> None:
    """One side in its own process: a run per "run" line on stdin, its peak memory on "done"."""
    data = source.read_bytes()
    limits = service_limits()
    work = SIDES[side]
    last: list[Encoded] = []
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() == "run" and work is not None:
            start = time.perf_counter()
            last = work(data, limits)
            print(json.dumps({"s": time.perf_counter() - start}), flush=True)
        elif line.strip() == "done":
            for r in last:
                source.with_suffix(f".{side}.{r.name}.webp").write_bytes(r.data)
            renditions = [{"name": r.name, "width": r.width, "height": r.height, "bytes": len(r.data)} for r in last]
            print(json.dumps({"peak_rss_kb": _peak_rss_kb(), "renditions": renditions}), flush=True)
            return


class _Side:
    def __init__(self, side: str, source: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.media", "worker", side, str(source)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.side = side
        self.read()

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.side} worker exited with {self.process.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def finish(self) -> dict[str, Any]:
        answer = self.ask("done")
        self.process.wait(timeout=30)
        return answer


def _psnr_db(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio between two RGB pictures of the same size."""
    rms = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms
    mse = sum(x * x for x in rms) / len(rms)
    return round(10 * math.log10(255 * 255 / mse), 1) if mse else math.inf


def measure(width: int, height: int, workdir: Path) -> dict[str, Any]:
    data = camera_jpeg(width, height)
    source = workdir / f"source-{width}x{height}.jpg"
    source.write_bytes(data)
    sides = {name: _Side(name, source) for name in SIDES}
    times: dict[str, list[float]] = {"plain": [], "ours": []}
    for round_ in range(WARMUP + RUNS):
        order = ("plain", "ours") if round_ % 2 == 0 else ("ours", "plain")
        for name in order:
            seconds = float(sides[name].ask("run")["s"])
            if round_ >= WARMUP:
                times[name].append(seconds)
    ends = {name: side.finish() for name, side in sides.items()}
    idle_kb = ends["idle"]["peak_rss_kb"]
    result: dict[str, Any] = {
        "source": {
            "width": width,
            "height": height,
            "megapixels": round(width * height / 1e6, 1),
            "jpeg_bytes": len(data),
            "jpeg_quality": SOURCE_QUALITY,
            "exif": f"orientation {ORIENTATION}, make, model, date, GPS",
        },
        "idle_peak_rss_mb": round(idle_kb / 1024, 1),
    }
    for name in ("plain", "ours"):
        result[name] = {
            "ms": summary_ms(times[name]),
            "peak_rss_growth_mb": round((ends[name]["peak_rss_kb"] - idle_kb) / 1024, 1),
            "renditions": ends[name]["renditions"],
        }
    result["ratio_p50_ours_over_plain"] = round(result["ours"]["ms"]["p50"] / result["plain"]["ms"]["p50"], 2)
    # How close each "high" is to an exact one: the full-size picture, upright, Lanczos-resized.
    with Image.open(source) as full, Image.open(source.with_suffix(".ours.high.webp")) as mine:
        upright = ImageOps.exif_transpose(full)
        exact = upright.resize(mine.size, Image.Resampling.LANCZOS)
        result["ours"]["high_psnr_db_vs_exact"] = _psnr_db(mine, exact)
    with Image.open(source.with_suffix(".plain.high.webp")) as theirs:
        # plain left the picture as stored: turn it upright as orientation 6 says (ROTATE_270).
        result["plain"]["high_psnr_db_vs_exact"] = _psnr_db(theirs.transpose(Image.Transpose.ROTATE_270), exact)
    return result


def _print(case: dict[str, Any]) -> None:
    src, p, o = case["source"], case["plain"], case["ours"]
    print(
        f"media {src['width']}x{src['height']} JPEG ({src['jpeg_bytes'] / 1e6:.1f} MB) -> 2048/1024/256 WebP | "
        f"plain Pillow p50 {p['ms']['p50']:7.1f} p95 {p['ms']['p95']:7.1f} ms, peak +{p['peak_rss_growth_mb']} MB | "
        f"ours p50 {o['ms']['p50']:7.1f} p95 {o['ms']['p95']:7.1f} ms, peak +{o['peak_rss_growth_mb']} MB | "
        f"ratio {case['ratio_p50_ours_over_plain']} | 2048 px vs exact: plain {p['high_psnr_db_vs_exact']} dB, "
        f"ours {o['high_psnr_db_vs_exact']} dB",
        flush=True,
    )


async def main() -> None:
    load_before = os.getloadavg()
    cases = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-media-") as tmp:
        for width, height in SIZES:
            case = measure(width, height, Path(tmp))
            _print(case)
            cases.append(case)
    limits = service_limits()
    path = write(
        "media",
        {
            "what": "image upload processing: plain Pillow vs the media service's pipeline, same bytes, same run",
            "renditions": {
                "sizes_px": [limits.high_px, limits.low_px, limits.thumb_px],
                "format": limits.output_format,
                "quality": limits.quality,
                "webp_method": limits.webp_method,
            },
            "plain": "Image.open + load() (full decode); each size a LANCZOS resize of the full image "
            "(no draft, no reducing_gap); WebP save at the same quality and method; EXIF orientation ignored",
            "ours": "parley_media: identify() + process_image() as MediaLibrary.ingest runs it, minus S3 and "
            "the CpuPool thread hop: pixel limit, EXIF orientation, JPEG draft(), sRGB, each size resized "
            "from the previous with reducing_gap, re-encoded from pixels only",
            "timing": f"each side in its own fresh process, driven alternately; {WARMUP} warm-up run then "
            f"{RUNS} timed runs; perf_counter around the call",
            "memory": "peak RSS growth: VmHWM of the side's process minus VmHWM of an idle process with the "
            "same imports and source bytes (tracemalloc would miss Pillow's pixel buffers)",
            "fidelity": "high_psnr_db_vs_exact: PSNR of the 2048 px WebP against the full-size decode, "
            "upright, Lanczos-resized once (plain's turned upright first)",
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "worker":
    _worker(sys.argv[2], Path(sys.argv[3]))
