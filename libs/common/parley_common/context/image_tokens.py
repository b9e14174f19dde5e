"""What an image in a prompt costs in tokens, by each provider's published rule.

- OpenAI (and OpenAI-compatible servers, and the demo): `detail: low` is a flat 85 tokens.
  Otherwise the image is scaled to fit in 2048x2048, then its shortest side down to 768 px,
  and costs 85 + 170 per 512 px tile. (OpenAI treats `auto` as high for large images; we do
  the same, which never under-counts.)
- Anthropic: tokens ≈ width x height / 750, after scaling the long edge down to 1568 px; an
  image is never more than about 1,600 tokens.
- Gemini: 258 tokens when both sides are at most 384 px; larger images are cut into
  768x768 tiles of 258 tokens each.

An image whose size is unknown (0x0) is counted as a large one: OpenAI's most tiles (2048x768),
Anthropic's maximum, four Gemini tiles.
"""

from __future__ import annotations

import math

OPENAI_LOW = 85
OPENAI_BASE = 85
OPENAI_PER_TILE = 170
OPENAI_UNKNOWN = OPENAI_BASE + OPENAI_PER_TILE * 8  # 2048x768: the most tiles an image can make
ANTHROPIC_MAX_EDGE = 1568
ANTHROPIC_MAX = 1600
GEMINI_PER_TILE = 258


def openai_image_tokens(width: int, height: int, detail: str) -> int:
    if detail == "low":
        return OPENAI_LOW
    if width <= 0 or height <= 0:
        return OPENAI_UNKNOWN
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(int(w) / 512) * math.ceil(int(h) / 512)
    return OPENAI_BASE + OPENAI_PER_TILE * max(tiles, 1)


def anthropic_image_tokens(width: int, height: int) -> int:
    if width <= 0 or height <= 0:
        return ANTHROPIC_MAX
    w, h = float(width), float(height)
    if max(w, h) > ANTHROPIC_MAX_EDGE:
        scale = ANTHROPIC_MAX_EDGE / max(w, h)
        w, h = w * scale, h * scale
    return min(ANTHROPIC_MAX, max(1, math.ceil(w * h / 750)))


def gemini_image_tokens(width: int, height: int) -> int:
    if width <= 0 or height <= 0:
        return GEMINI_PER_TILE * 4
    if width <= 384 and height <= 384:
        return GEMINI_PER_TILE
    return GEMINI_PER_TILE * math.ceil(width / 768) * math.ceil(height / 768)


def image_tokens(provider_kind: str, width: int, height: int, detail: str = "") -> int:
    """Tokens one image costs with a provider of this kind ("openai", "anthropic", "gemini", "demo")."""
    if provider_kind == "anthropic":
        return anthropic_image_tokens(width, height)
    if provider_kind == "gemini":
        return gemini_image_tokens(width, height)
    return openai_image_tokens(width, height, detail)
