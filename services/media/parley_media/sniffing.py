"""What a file really is, from its first bytes; and whether the client's Content-Type agrees.

The type a client declares is never trusted: the bytes decide, and a declared type that names
another format is refused, so a mislabelled file is caught before any decoder runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley_common.errors import InvalidRequest

# Declared types that say nothing about the format: the bytes decide alone.
UNSPECIFIC = frozenset({"", "application/octet-stream", "binary/octet-stream"})

# ISO-BMFF brands (the `ftyp` box) of HEIF still images, and of MP4/QuickTime videos.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif"})
_VIDEO_BRANDS = frozenset(
    {
        b"isom",
        b"iso2",
        b"iso4",
        b"iso5",
        b"iso6",
        b"mp41",
        b"mp42",
        b"avc1",
        b"M4V ",
        b"qt  ",
        b"dash",
        b"3gp4",
        b"3gp5",
    }
)


@dataclass(frozen=True)
class FileType:
    mime_type: str
    kind: str  # "image" or "video"
    pillow_format: str = ""  # the Pillow plugin that may open it (images)

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


JPEG = FileType("image/jpeg", "image", "JPEG")
PNG = FileType("image/png", "image", "PNG")
GIF = FileType("image/gif", "image", "GIF")
WEBP = FileType("image/webp", "image", "WEBP")
HEIF = FileType("image/heif", "image", "HEIF")
AVIF = FileType("image/avif", "image", "AVIF")
MP4 = FileType("video/mp4", "video")
QUICKTIME = FileType("video/quicktime", "video")
WEBM = FileType("video/webm", "video")

# Declared types each real type may arrive as (browsers and phones disagree on names).
_ALIASES: dict[FileType, frozenset[str]] = {
    JPEG: frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}),
    PNG: frozenset({"image/png", "image/x-png", "image/apng"}),
    GIF: frozenset({"image/gif"}),
    WEBP: frozenset({"image/webp"}),
    HEIF: frozenset({"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence"}),
    AVIF: frozenset({"image/avif"}),
    MP4: frozenset({"video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp"}),
    QUICKTIME: frozenset({"video/quicktime", "video/mp4"}),
    WEBM: frozenset({"video/webm", "video/x-matroska"}),
}
ACCEPTED_DECLARED_TYPES = frozenset().union(*_ALIASES.values()) | UNSPECIFIC
# Bytes needed to tell every supported type apart.
SNIFF_BYTES = 64


def sniff(head: bytes) -> FileType | None:
    """The type of a file from its first SNIFF_BYTES bytes, or None when it is none we take."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return WEBM
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand == b"avif":
            return AVIF
        if brand in _HEIF_BRANDS:
            return HEIF
        if brand == b"qt  ":
            return QUICKTIME
        if brand in _VIDEO_BRANDS:
            return MP4
    return None


def normalize_declared(content_type: str) -> str:
    """`Image/JPEG; charset=x` -> `image/jpeg`."""
    return content_type.split(";", 1)[0].strip().lower()


def check_declared(content_type: str) -> str:
    """The declared type, normalized; a type Parley never takes is refused before any byte is read."""
    declared = normalize_declared(content_type)
    if declared not in ACCEPTED_DECLARED_TYPES:
        raise InvalidRequest(
            f"{declared!r} is not a supported media type (JPEG, PNG, WebP, GIF, HEIC/HEIF, MP4, QuickTime, WebM)",
            code="unsupported_media_type",
        )
    return declared


def identify(head: bytes, content_type: str) -> FileType:
    """The real type of a file; refuses unknown formats and a declared type that names another."""
    found = sniff(head)
    if found is None:
        raise InvalidRequest(
            "the file is not a supported image or video (JPEG, PNG, WebP, GIF, HEIC/HEIF, MP4, QuickTime, WebM)",
            code="unsupported_media_type",
        )
    declared = normalize_declared(content_type)
    if declared not in UNSPECIFIC and declared not in _ALIASES[found]:
        raise InvalidRequest(f"the file is {found.mime_type} but was sent as {declared}", code="content_type_mismatch")
    return found
