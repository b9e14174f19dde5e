"""The image pipeline on real files made here: orientation, metadata, sizes, formats, and the
files it must refuse (the files come from tests.support.media)."""

from __future__ import annotations

import io

import pillow_heif
import pytest
from PIL import Image, ImageDraw

from parley_common.errors import InvalidRequest
from parley_media.images import ImageLimits, process_image
from parley_media.sniffing import AVIF, GIF, HEIF, JPEG, PNG, WEBP, check_declared, identify, sniff
from tests.support.media import GPS_IFD, alpha_png, decompression_bomb, photo_jpeg

LIMITS = ImageLimits()


def animated_gif(frames: int = 3) -> bytes:
    pictures = []
    for i in range(frames):
        picture = Image.new("RGB", (120, 80), (40 * i, 200 - 40 * i, 90))
        ImageDraw.Draw(picture).rectangle((10 * i, 10, 10 * i + 30, 40), fill=(255, 255, 0))
        pictures.append(picture)
    buffer = io.BytesIO()
    pictures[0].save(buffer, "GIF", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return buffer.getvalue()


def heic(width: int = 800, height: int = 600) -> bytes:
    picture = Image.new("RGB", (width, height), (40, 90, 200))
    buffer = io.BytesIO()
    picture.save(buffer, "HEIF", quality=80)
    return buffer.getvalue()


def heic_supported() -> bool:
    try:
        return sniff(heic(64, 64)[:64]) == HEIF
    except (OSError, ValueError, KeyError):
        return False


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def assert_no_metadata(data: bytes) -> None:
    picture = opened(data)
    assert not picture.getexif(), "EXIF left in a rendition"
    assert "exif" not in picture.info and "xmp" not in picture.info and "icc_profile" not in picture.info
    assert b"Exif\x00" not in data and b"ParleyCam" not in data and b"GPS" not in data


def test_a_large_photo_is_turned_upright_fitted_and_stripped() -> None:
    source = photo_jpeg()
    assert opened(source).getexif().get_ifd(GPS_IFD), "the test photo carries GPS"
    result = process_image(source, JPEG, LIMITS)
    # Stored 4000x3000 with orientation 6: the picture is 3000 wide, 4000 tall.
    assert (result.width, result.height) == (3000, 4000)
    sizes = {r.name: (r.width, r.height) for r in result.renditions}
    assert sizes == {"high": (1536, 2048), "low": (768, 1024), "thumb": (192, 256)}
    for rendition in result.renditions:
        picture = opened(rendition.data)
        assert picture.format == "WEBP" and rendition.mime_type == "image/webp"
        assert max(picture.size) <= 2048
        assert_no_metadata(rendition.data)
    # Rotated 90° clockwise, the stored top-left corner (red) is now the top-right one.
    high = opened(result.renditions[0].data).convert("RGB")
    r, g, b = high.getpixel((high.width - 20, 20))  # type: ignore[misc]
    assert r > 180 and g < 80 and b < 80, "the red corner is not top-right: orientation not applied"
    r2, g2, _ = high.getpixel((20, 20))  # type: ignore[misc]
    assert not (r2 > 180 and g2 < 80), "the top-left corner is red: the picture was not rotated"


def test_jpeg_output_is_clean_too() -> None:
    result = process_image(photo_jpeg(2400, 1800, orientation=1), JPEG, ImageLimits(output_format="jpeg"))
    high = result.renditions[0]
    assert opened(high.data).format == "JPEG" and high.mime_type == "image/jpeg"
    assert (high.width, high.height) == (2048, 1536)
    assert_no_metadata(high.data)
    assert b"\xff\xe1" not in high.data[:4096], "an APP1 (EXIF/XMP) segment was written"


def test_low_detail_limits_fit_within_1024() -> None:
    result = process_image(photo_jpeg(3000, 2000, orientation=1), JPEG, ImageLimits(high_px=1024, low_px=512))
    assert max(result.renditions[0].width, result.renditions[0].height) == 1024


def test_a_png_keeps_its_transparency_in_webp_and_is_flattened_in_jpeg() -> None:
    source = alpha_png()
    webp = opened(process_image(source, PNG, LIMITS).renditions[0].data)
    assert webp.mode == "RGBA" and (webp.width, webp.height) == (640, 480)
    assert webp.getpixel((2, 2))[3] == 0 and webp.getpixel((320, 240))[3] == 255  # type: ignore[index]
    jpeg = opened(process_image(source, PNG, ImageLimits(output_format="jpeg")).renditions[0].data)
    assert jpeg.mode == "RGB" and min(jpeg.getpixel((2, 2))) > 240  # type: ignore[arg-type]


def test_an_animated_gif_gives_a_still_of_its_first_frame() -> None:
    source = animated_gif(frames=3)
    assert sniff(source[:64]) == GIF
    result = process_image(source, GIF, LIMITS)
    assert result.frame_count == 3 and (result.width, result.height) == (120, 80)
    still = opened(result.renditions[0].data)
    assert still.format == "WEBP" and getattr(still, "n_frames", 1) == 1


def test_heic_is_read_when_pillow_heif_can_write_one() -> None:
    if not heic_supported():
        pytest.skip(f"pillow-heif {pillow_heif.__version__} here has no HEIF encoder to make a sample")
    source = heic()
    assert sniff(source[:64]) == HEIF and identify(source[:64], "image/heic") == HEIF
    result = process_image(source, HEIF, LIMITS)
    assert (result.width, result.height) == (800, 600)
    assert opened(result.renditions[0].data).format == "WEBP"


def test_avif_is_read() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 120, 30)).save(buffer, "AVIF")
    assert sniff(buffer.getvalue()[:64]) == AVIF
    result = process_image(buffer.getvalue(), AVIF, LIMITS)
    assert (result.width, result.height) == (300, 200)


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    bomb = decompression_bomb()
    assert len(bomb) < 200_000
    with pytest.raises(InvalidRequest) as caught:
        process_image(bomb, PNG, LIMITS)
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_truncated_file_is_refused(kind: str) -> None:
    source = photo_jpeg(1200, 900, orientation=1) if kind == "jpeg" else alpha_png()
    cut = source[: len(source) // 2]
    with pytest.raises(InvalidRequest) as caught:
        process_image(cut, JPEG if kind == "jpeg" else PNG, LIMITS)
    assert caught.value.code == "corrupt_image"


def test_garbage_with_an_image_header_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        process_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, PNG, LIMITS)
    assert caught.value.code == "corrupt_image"


def test_types_come_from_the_bytes_and_a_lying_content_type_is_refused() -> None:
    jpeg, png = photo_jpeg(64, 48)[:64], alpha_png(32, 32)[:64]
    assert identify(jpeg, "image/jpeg") == JPEG
    assert identify(jpeg, "application/octet-stream") == JPEG
    assert identify(jpeg, "IMAGE/JPG; name=x") == JPEG
    webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(webp, "WEBP")
    assert identify(webp.getvalue()[:64], "") == WEBP
    with pytest.raises(InvalidRequest) as lie:
        identify(jpeg, "image/png")
    assert lie.value.code == "content_type_mismatch"
    with pytest.raises(InvalidRequest) as unknown:
        identify(b"%PDF-1.7\n" + b"\x00" * 55, "image/png")
    assert unknown.value.code == "unsupported_media_type"
    with pytest.raises(InvalidRequest):
        identify(b"", "")
    assert identify(png, "image/png") == PNG
    with pytest.raises(InvalidRequest) as declared:
        check_declared("application/pdf")
    assert declared.value.code == "unsupported_media_type"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    # A 300x200 picture, as a camera would store it for each orientation: red in the upright
    # top-left corner, blue in the upright bottom-right. Processing must put them back there.
    upright = Image.new("RGB", (3000, 2000), (128, 128, 128))
    ImageDraw.Draw(upright).rectangle((0, 0, 599, 399), fill=(255, 0, 0))
    ImageDraw.Draw(upright).rectangle((2400, 1600, 2999, 1999), fill=(0, 0, 255))
    undo = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    stored = upright.transpose(undo[orientation]) if orientation in undo else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    result = process_image(buffer.getvalue(), JPEG, LIMITS)
    assert (result.width, result.height) == (3000, 2000)
    high = opened(result.renditions[0].data).convert("RGB")
    assert high.size == (2048, 1365)
    red, blue = high.getpixel((40, 40)), high.getpixel((2000, 1330))
    assert red[0] > 200 and red[2] < 60, (orientation, red)
    assert blue[2] > 200 and blue[0] < 60, (orientation, blue)
