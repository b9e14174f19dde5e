"""Videos with PyAV (FFmpeg): a poster frame and N evenly sampled frames, for providers that
take images only.

Bounded before any frame is decoded: the frame size, the duration (from the header, or from
packet times when the header has none, as with browser-recorded WebM) and the frame rate
(packets counted without decoding them). Then each sample seeks to the keyframe before it and
takes that keyframe when it is close enough, otherwise decodes forward only until a budget of
decoded pixels is spent (a 4096x4096 keyframe followed by thousands of "nothing changed" frames
would otherwise be a full-size decode per frame). The whole job runs in a child process with a
deadline (video_pool), so what these bounds miss is stopped there.
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
    max_fps: float = 120.0
    # Decoded pixels one sample may cost (about 48 frames of 1080p, 6 of 4096x4096).
    decode_pixels: int = 100_000_000


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
            duration_s, packets = _measure(container, stream, limits)
            if duration_s > limits.max_duration_s:
                raise InvalidRequest(
                    f"the video is {duration_s:.1f} s long, longer than the {limits.max_duration_s:g} s allowed",
                    code="video_too_long",
                )
            if packets > limits.max_fps * max(duration_s, 1.0):
                raise InvalidRequest(
                    f"the video has {packets} frames in {duration_s:.1f} s, more than {limits.max_fps:g} a second",
                    code="media_too_complex",
                )
            interval = duration_s / limits.frames
            samples = [
                _frame_at(container, stream, (k + 0.5) * interval, interval / 4, limits.decode_pixels)
                for k in range(limits.frames)
            ]
    except av.FFmpegError as exc:
        if isinstance(exc, MemoryError):
            raise InvalidRequest("the video needs too much memory to decode", code="media_too_complex") from None
        raise InvalidRequest(f"the video data is broken: {exc}", code="corrupt_video") from None
    # Samples that stopped on the same frame (a budget spent before the target) count once.
    found = list({round(at_s, 3): (at_s, picture) for at_s, picture in samples if picture is not None}.values())
    if not found:
        raise InvalidRequest("no frame of the video could be decoded", code="corrupt_video")
    poster = found[0][1]
    renditions = renditions_of(poster, images)
    for index, (at_s, picture) in enumerate(found, start=1):
        small = picture.resize(fit(picture.size, images.low_px), Image.Resampling.LANCZOS)
        renditions.append(encode(f"frame-{index}", small, images, at_ms=round(at_s * 1000)))
    return ProcessedVideo(poster.width, poster.height, round(duration_s * 1000), renditions)


def _measure(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, limits: VideoLimits
) -> tuple[float, int]:
    """The duration (the header's, else the last packet time) and the number of video packets,
    read without decoding; counting stops once either is past what could be accepted."""
    header_s = 0.0
    if container.duration:
        header_s = float(container.duration) / av.time_base
    elif stream.duration and stream.time_base:
        header_s = float(stream.duration * stream.time_base)
    most = limits.max_fps * max(limits.max_duration_s, 1.0)
    last, packets = 0.0, 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        packets += 1
        if packet.pts is not None and packet.time_base is not None:
            last = max(last, float(packet.pts * packet.time_base))
        if packets > most or (not header_s and last > limits.max_duration_s):
            break
    container.seek(0)
    return (header_s or last), packets


def _frame_at(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    at_s: float,
    tolerance_s: float,
    budget_px: int,
) -> tuple[float, Image.Image | None]:
    """The first frame from `at_s - tolerance_s` on: often the keyframe the seek lands on, one
    decode. Decoding forward stops once `budget_px` decoded pixels are spent, taking the last
    frame decoded (earlier than asked, and its real time is kept). Upright, RGB."""
    if stream.time_base:
        container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    picked = None
    spent = 0
    for frame in container.decode(stream):
        picked = frame
        spent += frame.width * frame.height
        if (frame.time is not None and frame.time >= at_s - tolerance_s) or spent >= budget_px:
            break
    if picked is None:
        return at_s, None
    picture = picked.to_image().convert("RGB")  # type: ignore[no-untyped-call]
    if picked.rotation:
        # The display matrix rotates counterclockwise by this many degrees; so does PIL's rotate.
        picture = picture.rotate(picked.rotation, expand=True)
    return (picked.time if picked.time is not None else at_s), picture
