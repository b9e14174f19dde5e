"""Videos with PyAV (FFmpeg): a poster frame and N evenly sampled frames, for providers that
take images only.

Bounded before any frame is decoded: the duration (from the header, or from packet times when
the header has none, as with browser-recorded WebM) and the frame size. Only the frames that
are kept are decoded, each after a seek to the keyframe before it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import av.container
import av.video.stream
from PIL import Image

from parley_common.errors import InvalidRequest

from .images import Encoded, ImageLimits, encode, fit, renditions_of
from .sniffing import FileType

MAX_SIDE = 8192


@dataclass(frozen=True)
class VideoLimits:
    max_duration_s: float = 120.0
    frames: int = 4


@dataclass(frozen=True)
class ProcessedVideo:
    width: int  # upright
    height: int
    duration_ms: int
    renditions: list[Encoded]


def process_video(data: bytes, file_type: FileType, limits: VideoLimits, images: ImageLimits) -> ProcessedVideo:
    """Renditions of a video: "high", "low", "thumb" of its poster, then "frame-1".."frame-N"
    (at most `images.low_px`), or InvalidRequest saying why the video cannot be used."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidRequest(f"the {file_type.mime_type} file cannot be read: {exc}", code="corrupt_video") from None
    try:
        with container:
            if not container.streams.video:
                raise InvalidRequest("the file has no video stream", code="corrupt_video")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                raise InvalidRequest("the video has no frame size", code="corrupt_video")
            if width * height > images.max_pixels or max(width, height) > MAX_SIDE:
                raise InvalidRequest(f"the video's frames are {width}x{height}, too large", code="video_too_large")
            duration_s = _duration_s(container, stream, limits.max_duration_s)
            if duration_s > limits.max_duration_s:
                raise InvalidRequest(
                    f"the video is {duration_s:.1f} s long, longer than the {limits.max_duration_s:g} s allowed",
                    code="video_too_long",
                )
            samples = [
                _frame_at(container, stream, (k + 0.5) / limits.frames * duration_s) for k in range(limits.frames)
            ]
    except av.FFmpegError as exc:
        raise InvalidRequest(f"the video data is broken: {exc}", code="corrupt_video") from None
    found = [(at_s, picture) for at_s, picture in samples if picture is not None]
    if not found:
        raise InvalidRequest("no frame of the video could be decoded", code="corrupt_video")
    poster = found[0][1]
    renditions = renditions_of(poster, images)
    for index, (at_s, picture) in enumerate(found, start=1):
        small = picture.resize(fit(picture.size, images.low_px), Image.Resampling.LANCZOS)
        renditions.append(encode(f"frame-{index}", small, images, at_ms=round(at_s * 1000)))
    return ProcessedVideo(poster.width, poster.height, round(duration_s * 1000), renditions)


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream, limit_s: float) -> float:
    if container.duration:
        return float(container.duration) / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    # No duration in the header: read packet times (no decoding), stopping past the limit.
    last = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            last = max(last, float(packet.pts * packet.time_base))
            if last > limit_s:
                break
    container.seek(0)
    return last


def _frame_at(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, at_s: float
) -> tuple[float, Image.Image | None]:
    """The first frame at or after `at_s` (or the last one before the end), upright, RGB."""
    if stream.time_base:
        container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    picked = None
    for frame in container.decode(stream):
        picked = frame
        if frame.time is not None and frame.time >= at_s:
            break
    if picked is None:
        return at_s, None
    picture = picked.to_image().convert("RGB")  # type: ignore[no-untyped-call]
    if picked.rotation:
        # The display matrix rotates counterclockwise by this many degrees; so does PIL's rotate.
        picture = picture.rotate(picked.rotation, expand=True)
    return (picked.time if picked.time is not None else at_s), picture
