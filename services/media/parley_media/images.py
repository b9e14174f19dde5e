"""Images with Pillow: decode safely, turn upright, drop every piece of metadata, fit, encode.

Everything here is CPU work on bytes in memory, run on the service's worker threads (Pillow
releases the GIL while it decodes, resizes and encodes). What leaves this module are new
images built from pixels only: no EXIF (so no GPS), no XMP, no comments; colours are converted
to sRGB first, so dropping the ICC profile changes nothing a viewer sees.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from parley_common.errors import InvalidRequest

from .sniffing import FileType

pillow_heif.register_heif_opener()
# The pixel limit is ImageLimits.max_pixels, checked on each image's header before it is
# decoded; Pillow's process-wide limit would only warn (or fail) at a fixed size of its own.
Image.MAX_IMAGE_PIXELS = None

_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}
# Resize in two steps (a fast integer reduction, then Lanczos) once the image is this many
# times the target: indistinguishable output, much less work for large photos.
REDUCING_GAP = 3.0
_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 50_000_000
    high_px: int = 2048
    low_px: int = 1024
    thumb_px: int = 256
    output_format: Literal["webp", "jpeg"] = "webp"
    quality: int = 82
    webp_method: int = 2


@dataclass(frozen=True)
class Encoded:
    """One stored derivative."""

    name: str
    data: bytes
    mime_type: str
    width: int
    height: int
    at_ms: int = 0


@dataclass(frozen=True)
class ProcessedImage:
    width: int  # the source, upright
    height: int
    frame_count: int
    renditions: list[Encoded]


def fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    """`size` scaled down (never up) to fit a `box` x `box` square, keeping the aspect ratio."""
    width, height = size
    scale = min(1.0, box / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel in memory (RGB is padded to 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _refuse_past_pixel_limit(width: int, height: int, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise InvalidRequest(
            f"the image is {width}x{height} pixels, more than the {limits.max_pixels} allowed", code="image_too_large"
        )


def decoded_bytes(data: bytes, file_type: FileType, limits: ImageLimits) -> int:
    """The memory processing this image will hold at its peak, from its header alone (nothing
    is decoded): its pixels as decoded (JPEGs at their draft() scale), plus a full-size RGB(A)
    copy for the modes converted before they are resized, plus the file. Refuses more pixels
    than the limit, as process_image would."""
    try:
        with Image.open(io.BytesIO(data), formats=[file_type.pillow_format]) as source:
            width, height = source.size
            _refuse_past_pixel_limit(width, height, limits)
            if file_type.pillow_format == "JPEG":
                source.draft(None, fit((width, height), limits.high_px))
                width, height = source.size
            mode = source.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidRequest(f"the {file_type.mime_type} file cannot be read: {exc}", code="corrupt_image") from None
    pixels = width * height
    held = pixels * _bytes_per_pixel(mode)
    if mode not in _RESIZABLE_FIRST or file_type.pillow_format in ("HEIF", "AVIF"):
        held += 2 * pixels * 4  # turned upright and converted at full size; libheif's own buffer
    # Lanczos' intermediate (reducing_gap) and the renditions, the file, and some slack.
    return held + held // 4 + len(data) + 8 * 1024 * 1024


def process_image(data: bytes, file_type: FileType, limits: ImageLimits) -> ProcessedImage:
    """The renditions "high", "low" and "thumb" of an image file, or InvalidRequest saying
    why the file cannot be used (corrupt, truncated, too many pixels)."""
    try:
        with Image.open(io.BytesIO(data), formats=[file_type.pillow_format]) as source:
            width, height = source.size
            _refuse_past_pixel_limit(width, height, limits)
            frame_count = int(getattr(source, "n_frames", 1))
            source.seek(0)
            orientation = int(source.getexif().get(_ORIENTATION, 1))
            upright = (height, width) if orientation in _SWAPS_AXES else (width, height)
            if file_type.pillow_format == "JPEG":
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result still covers the target.
                target = fit(upright, limits.high_px)
                source.draft(None, (target[1], target[0]) if orientation in _SWAPS_AXES else target)
            icc = source.info.get("icc_profile")
            source.load()
            if source.mode in _RESIZABLE_FIRST:
                # Shrink to the largest rendition first (the box is square, so turning the
                # picture upright afterwards gives the same result), then turn and convert the
                # small copy: no second full-size copy of a 12 MP photo.
                picture = _upright(_shrink(source, limits.high_px), orientation)
            else:
                picture = ImageOps.exif_transpose(source)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # Unreadable, truncated, or inconsistent: Pillow says which in `exc`.
        raise InvalidRequest(f"the {file_type.mime_type} file cannot be read: {exc}", code="corrupt_image") from None
    picture = _to_srgb(picture, icc if isinstance(icc, bytes) else None)
    return ProcessedImage(upright[0], upright[1], frame_count, renditions_of(picture, limits))


def renditions_of(picture: Image.Image, limits: ImageLimits, prefix: str = "") -> list[Encoded]:
    """ "high", "low" and "thumb" of an upright RGB(A) picture, each made from the one before."""
    high = _shrink(picture, limits.high_px)
    low = _shrink(high, limits.low_px)
    thumb = _shrink(low, limits.thumb_px)
    return [
        encode(prefix + "high", high, limits),
        encode(prefix + "low", low, limits),
        encode(prefix + "thumb", thumb, limits),
    ]


def encode(name: str, picture: Image.Image, limits: ImageLimits, at_ms: int = 0) -> Encoded:
    """The picture in the output format, from its pixels alone (no metadata of any kind)."""
    clean = Image.new(picture.mode, picture.size)
    clean.paste(picture)
    buffer = io.BytesIO()
    if limits.output_format == "webp":
        clean.save(buffer, "WEBP", quality=limits.quality, method=limits.webp_method)
        mime_type = "image/webp"
    else:
        if clean.mode == "RGBA":
            flat = Image.new("RGB", clean.size, (255, 255, 255))
            flat.paste(clean, mask=clean.getchannel("A"))
            clean = flat
        clean.save(buffer, "JPEG", quality=limits.quality, optimize=True, progressive=True)
        mime_type = "image/jpeg"
    return Encoded(name, buffer.getvalue(), mime_type, clean.width, clean.height, at_ms)


# Modes a Lanczos resize handles as they are (palette and bilevel images are converted first).
_RESIZABLE_FIRST = frozenset({"RGB", "RGBA", "L", "LA"})
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(picture: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return picture if method is None else picture.transpose(method)


def _shrink(picture: Image.Image, box: int) -> Image.Image:
    size = fit(picture.size, box)
    if size == picture.size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _to_srgb(picture: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB, or RGBA when the image has transparency; colours converted to sRGB from its profile."""
    has_alpha = picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info)
    mode = "RGBA" if has_alpha else "RGB"
    if icc and picture.mode in ("RGB", "RGBA", "CMYK", "L"):
        try:
            converted = ImageCms.profileToProfile(
                picture, ImageCms.ImageCmsProfile(io.BytesIO(icc)), _SRGB, outputMode=mode
            )
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the pixels as they are
    return picture if picture.mode == mode else picture.convert(mode)
