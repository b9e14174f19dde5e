"""Image generators: the demo picture, and the OpenAI Images adapter against httpx's MockTransport."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from parley_common.errors import InvalidRequest, RateLimited, Unavailable
from parley_media.cpu_pool import CpuPool
from parley_media.generators import DemoImageGenerator, OpenAIImageGenerator, draw_demo_picture, parse_size


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_demo_picture_depends_on_the_prompt_only() -> None:
    first = draw_demo_picture("a lighthouse at night", 256, 192)
    assert first == draw_demo_picture("a lighthouse at night", 256, 192)
    assert first != draw_demo_picture("a lighthouse at noon", 256, 192)
    picture = Image.open(io.BytesIO(first))
    assert picture.format == "PNG" and picture.size == (256, 192)
    colours = picture.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20, "not a flat picture"


async def test_the_demo_generator_draws_on_the_pool() -> None:
    pool = CpuPool(threads=1, max_jobs=1)
    generator = DemoImageGenerator(pool)
    picture = await generator.generate("a red fox", "512x256")
    pool.shutdown()
    assert Image.open(io.BytesIO(picture.data)).size == (512, 256)
    assert generator.name == "demo"


@pytest.mark.parametrize("size", ["big", "10x10", "4096x4096", "1024*1024"])
def test_sizes_out_of_range_are_refused(size: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_size(size)
    assert parse_size("") == (1024, 1024)


def openai_with(handler: httpx.MockTransport) -> OpenAIImageGenerator:
    return OpenAIImageGenerator(
        base_url="https://images.test/v1",
        api_key="sk-test",
        model="gpt-image-1.5",
        client=httpx.AsyncClient(transport=handler),
        max_bytes=1_000_000,
    )


async def test_openai_request_and_b64_answer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"created": 1, "data": [{"b64_json": base64.b64encode(png(64, 64)).decode()}]})

    generator = openai_with(httpx.MockTransport(answer))
    picture = await generator.generate("a blue whale", "1024x1024")
    assert Image.open(io.BytesIO(picture.data)).size == (64, 64)
    request = seen[0]
    assert request.method == "POST" and str(request.url) == "https://images.test/v1/images/generations"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == {
        "model": "gpt-image-1.5",
        "prompt": "a blue whale",
        "n": 1,
        "size": "1024x1024",
    }
    assert generator.name == "openai:gpt-image-1.5"


async def test_openai_url_answers_are_downloaded() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/images/generations":
            return httpx.Response(
                200, json={"data": [{"url": "https://cdn.test/img.png", "revised_prompt": "a whale, blue"}]}
            )
        assert str(request.url) == "https://cdn.test/img.png"
        return httpx.Response(200, content=png(32, 32))

    picture = await openai_with(httpx.MockTransport(answer)).generate("a blue whale", "")
    assert picture.revised_prompt == "a whale, blue" and Image.open(io.BytesIO(picture.data)).size == (32, 32)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, InvalidRequest, "image_generation_rejected"),
        (429, RateLimited, "image_generation_busy"),
        (401, Unavailable, "image_generation_unavailable"),
        (500, Unavailable, "image_generation_unavailable"),
    ],
)
async def test_openai_errors_become_typed_errors(status: int, error: type[Exception], code: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "Your request was rejected by the safety system.", "type": "x"}}
        return httpx.Response(status, json=body, headers={"retry-after": "3"})

    with pytest.raises(error) as caught:
        await openai_with(httpx.MockTransport(answer)).generate("anything", "")
    assert getattr(caught.value, "code", None) == code
    if status == 429:
        assert getattr(caught.value, "retry_after_s", None) == 3


async def test_openai_unreachable_is_unavailable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route", request=request)

    with pytest.raises(Unavailable):
        await openai_with(httpx.MockTransport(answer)).generate("anything", "")
