"""Image generators: the embedded demo (a deterministic picture drawn from the prompt) and an
adapter for the OpenAI Images API (`POST {base_url}/images/generations`).

A generator returns encoded bytes; the media library then treats them like an upload
(type check, renditions, storage), so a generated image is media like any other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import re
import textwrap
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from PIL import Image, ImageDraw, ImageFont

from parley_common.errors import InvalidRequest, RateLimited, Unavailable

from .cpu_pool import CpuPool

log = logging.getLogger(__name__)

DEFAULT_SIZE = "1024x1024"
_SIZE = re.compile(r"^(\d{2,4})x(\d{2,4})$")
MAX_PROMPT_CHARS = 4000


@dataclass(frozen=True)
class GeneratedPicture:
    data: bytes
    revised_prompt: str = ""


class ImageGenerator(Protocol):
    @property
    def name(self) -> str: ...

    async def generate(self, prompt: str, size: str) -> GeneratedPicture:
        """An encoded image (PNG, JPEG or WebP) for the prompt; raises a ParleyError when refused."""
        ...


def parse_size(size: str, largest: int = 2048) -> tuple[int, int]:
    """ "WIDTHxHEIGHT" ("" = 1024x1024) as numbers, each 64..`largest`."""
    match = _SIZE.match(size or DEFAULT_SIZE)
    if not match:
        raise InvalidRequest(f"size must look like 1024x1024, not {size!r}", code="invalid_size")
    width, height = int(match.group(1)), int(match.group(2))
    if not (64 <= width <= largest and 64 <= height <= largest):
        raise InvalidRequest(f"size must be 64..{largest} pixels a side", code="invalid_size")
    return width, height


def draw_demo_picture(prompt: str, width: int, height: int) -> bytes:
    """A PNG that depends only on the prompt and the size: a gradient, shapes placed by the
    prompt's SHA-256, and the prompt itself as a caption."""
    digest = hashlib.sha256(prompt.encode()).digest()
    top = (digest[0], digest[1], digest[2])
    bottom = (digest[3], digest[4], digest[5])
    gradient = Image.linear_gradient("L").resize((width, height))
    picture = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), gradient
    )
    draw = ImageDraw.Draw(picture, "RGBA")
    for i in range(8):
        b = digest[6 + 3 * i : 9 + 3 * i]
        cx, cy = b[0] * width // 255, b[1] * height // 255
        radius = (16 + b[2] % 96) * min(width, height) // 512
        colour = (digest[(i * 5) % 32], digest[(i * 7 + 1) % 32], digest[(i * 11 + 2) % 32], 170)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if b[2] % 2:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    font_size = max(12, min(width, height) // 24)
    font = ImageFont.load_default(font_size)
    lines = textwrap.wrap(" ".join(prompt.split()), width=max(10, width // (font_size // 2 + 1)))[:3]
    band = (font_size + 6) * len(lines) + 12
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 140))
    for n, line in enumerate(lines):
        draw.text((12, height - band + 6 + n * (font_size + 6)), line, fill=(255, 255, 255, 255), font=font)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


class DemoImageGenerator:
    """The embedded default: no network, no key, the same picture for the same prompt."""

    name = "demo"

    def __init__(self, cpu: CpuPool) -> None:
        self.cpu = cpu

    async def generate(self, prompt: str, size: str) -> GeneratedPicture:
        width, height = parse_size(size)
        # The canvas, a second layer to composite, the mask, and the PNG encoder's buffers.
        memory = width * height * 4 * 4
        return GeneratedPicture(await self.cpu.run(draw_demo_picture, prompt, width, height, memory=memory))


class OpenAIImageGenerator:
    """The OpenAI Images API, or a server compatible with it. GPT image models answer with
    `b64_json`; older and compatible servers may answer with a `url`, which is fetched."""

    def __init__(self, *, base_url: str, api_key: str, model: str, client: httpx.AsyncClient, max_bytes: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.client = client
        self.max_bytes = max_bytes

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    async def generate(self, prompt: str, size: str) -> GeneratedPicture:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": 1}
        if size:
            body["size"] = size
        try:
            reply = await self.client.post(
                f"{self.base_url}/images/generations",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the image generator is unreachable: {type(exc).__name__}", code="image_generation_unavailable"
            ) from None
        if reply.status_code != 200:
            raise _error_for(reply)
        try:
            item = reply.json()["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise Unavailable(
                "the image generator sent an answer without an image", code="image_generation_unavailable"
            ) from None
        revised = str(item.get("revised_prompt") or "")
        if item.get("b64_json"):
            try:
                return GeneratedPicture(base64.b64decode(item["b64_json"], validate=True), revised)
            except (binascii.Error, ValueError):
                raise Unavailable(
                    "the image generator sent undecodable image data", code="image_generation_unavailable"
                ) from None
        if item.get("url"):
            return GeneratedPicture(await self._download(str(item["url"])), revised)
        raise Unavailable("the image generator sent an answer without an image", code="image_generation_unavailable")

    async def _download(self, url: str) -> bytes:
        try:
            async with self.client.stream("GET", url) as reply:
                if reply.status_code != 200:
                    raise Unavailable(
                        f"the generated image could not be fetched ({reply.status_code})",
                        code="image_generation_unavailable",
                    )
                chunks: list[bytes] = []
                total = 0
                async for chunk in reply.aiter_bytes():
                    total += len(chunk)
                    if total > self.max_bytes:
                        raise Unavailable("the generated image is too large", code="image_generation_unavailable")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the generated image could not be fetched: {type(exc).__name__}", code="image_generation_unavailable"
            ) from None


def _error_for(reply: httpx.Response) -> Exception:
    try:
        message = str(reply.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = reply.text[:200]
    status = reply.status_code
    if status == 400:
        # Refused by the provider (its content policy, an unsupported size): the client can change it.
        return InvalidRequest(f"the image generator refused the request: {message}", code="image_generation_rejected")
    if status == 429:
        retry_after = reply.headers.get("retry-after", "")
        return RateLimited(
            "the image generator is busy; try again shortly",
            code="image_generation_busy",
            retry_after_s=int(retry_after) if retry_after.isascii() and retry_after.isdigit() else None,
        )
    if status in (401, 403):
        log.error("the image generator refused our credentials", extra={"status": status})
    return Unavailable(f"the image generator failed ({status})", code="image_generation_unavailable")
