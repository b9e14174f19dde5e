"""Videos made here with PyAV: poster and sampled frames, rotation, and the videos refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from parley_common.errors import InvalidRequest
from parley_media.images import ImageLimits
from parley_media.sniffing import MP4, WEBM, sniff
from parley_media.video import VideoLimits, process_video
from tests.support.media import short_video


def test_a_short_video_gives_a_poster_and_evenly_sampled_frames() -> None:
    data = short_video(3.0)
    assert sniff(data[:64]) == MP4
    result = process_video(data, MP4, VideoLimits(frames=4), ImageLimits())
    assert (result.width, result.height) == (320, 240)
    assert 2900 <= result.duration_ms <= 3100
    names = [r.name for r in result.renditions]
    assert names == ["high", "low", "thumb", "frame-1", "frame-2", "frame-3", "frame-4"]
    frames = [r for r in result.renditions if r.name.startswith("frame-")]
    positions = [f.at_ms for f in frames]
    assert positions == sorted(positions) and positions[0] < 800 and positions[-1] > 2200
    reds = [Image.open(io.BytesIO(f.data)).convert("RGB").getpixel((300, 200))[0] for f in frames]  # type: ignore[index]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 100, "frames are not taken across the video"
    for rendition in result.renditions:
        assert Image.open(io.BytesIO(rendition.data)).format == "WEBP"


def test_a_phone_video_with_a_rotation_is_shown_upright() -> None:
    # A display matrix of -90° (counterclockwise) = shown turned 90° clockwise, as phones record portrait.
    data = short_video(1.0, width=320, height=240, rotation=-90)
    result = process_video(data, MP4, VideoLimits(frames=1), ImageLimits())
    assert (result.width, result.height) == (240, 320)
    poster = Image.open(io.BytesIO(result.renditions[0].data)).convert("RGB")
    # The white block stored top-left is top-right once turned clockwise.
    assert min(poster.getpixel((poster.width - 10, 10))) > 200  # type: ignore[arg-type]
    assert min(poster.getpixel((10, 10))) < 200  # type: ignore[arg-type]


def test_webm_without_a_duration_in_its_header_is_measured() -> None:
    data = short_video(2.0, fmt="webm")
    assert sniff(data[:64]) == WEBM
    result = process_video(data, WEBM, VideoLimits(frames=2), ImageLimits())
    assert 1700 <= result.duration_ms <= 2100


def test_a_video_longer_than_allowed_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        process_video(short_video(3.0), MP4, VideoLimits(max_duration_s=2.0), ImageLimits())
    assert caught.value.code == "video_too_long"


def test_a_video_with_frames_over_the_pixel_limit_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        process_video(short_video(1.0), MP4, VideoLimits(), ImageLimits(max_pixels=320 * 240 - 1))
    assert caught.value.code == "video_too_large"


def test_a_broken_video_is_refused() -> None:
    data = short_video(2.0)
    with pytest.raises(InvalidRequest) as caught:
        process_video(data[:200], MP4, VideoLimits(), ImageLimits())
    assert caught.value.code == "corrupt_video"
