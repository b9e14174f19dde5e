"""Real image and video bytes made on the fly, for the unit tests of media processing and the
integration tests that upload them."""

from __future__ import annotations

import io
import struct
import zlib

import av
from PIL import Image, ImageDraw

# The colour of photo_jpeg's top-left block, and the EXIF tags it sets.
RED = (220, 20, 20)
GPS_IFD = 0x8825
ORIENTATION = 0x0112


def photo_jpeg(width: int = 4000, height: int = 3000, orientation: int = 6) -> bytes:
    """A camera-like JPEG: stored landscape with a red block at its top-left corner, EXIF
    orientation (6 = shown rotated 90° clockwise), GPS position, a maker note."""
    picture = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for x in range(0, width, 61):
        draw.line([(x, 0), (width - x, height)], fill=(x % 255, 90, 200), width=3)
    draw.rectangle((0, 0, width // 8, height // 8), fill=RED)
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "ParleyCam"  # Make
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.0)})
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=88, exif=exif)
    return buffer.getvalue()


def alpha_png(width: int = 640, height: int = 480) -> bytes:
    picture = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(30, 160, 90, 255))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def decompression_bomb(side: int = 30_000) -> bytes:
    """A real PNG bomb: a 1-bit side x side image of zeros, ~100 kB that decode to ~110 MB
    (and to 3.6 GB once converted to RGBA) — far past the pixel limit."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def short_video(
    seconds: float = 3.0, width: int = 320, height: int = 240, fmt: str = "mp4", rotation: int = 0
) -> bytes:
    """`seconds` of 10 fps video whose frames change colour over time (frame i has red = 8*i)."""
    buffer = io.BytesIO()
    codec = "libx264" if fmt == "mp4" else "libvpx"
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(int(seconds * 10)):
            picture = Image.new("RGB", (width, height), (min(255, 8 * i), 60, 160))
            ImageDraw.Draw(picture).rectangle((0, 0, width // 4, height // 4), fill=(255, 255, 255))
            for packet in stream.encode(av.VideoFrame.from_image(picture)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_bomb_webm(side: int = 4096, frames: int = 400, fps: int = 30) -> bytes:
    """One side x side VP9 keyframe, then `frames - 1` copies of a tiny "nothing changed" frame:
    about 90 kB on disk, and every frame a full-size decode (~0.1 s of CPU each at 4096x4096)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        picture = Image.new("RGB", (side, side), (30, 90, 160))
        ImageDraw.Draw(picture).ellipse((side // 4, side // 4, side * 3 // 4, side * 3 // 4), fill=(240, 200, 40))
        frame = av.VideoFrame.from_image(picture)
        packets = []
        for i in range(6):
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode()
        key, still = bytes(packets[0]), bytes(min(packets[1:], key=lambda p: p.size))
        time_base = packets[0].time_base
        for i in range(frames):
            packet = av.Packet(key if i == 0 else still)
            packet.pts = packet.dts = i
            packet.time_base = time_base
            packet.stream = stream
            packet.is_keyframe = i == 0
            container.mux(packet)
    return buffer.getvalue()
