"""Media at the edges of the services: the gateway's streaming multipart reader and body limits,
the SSE `image` frame, and the orchestrator's image-turn detection and prompt images."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request

from parley.v1 import chat_pb2
from parley_common.context.image_prompts import image_prompt
from parley_common.context.prompt import with_images
from parley_common.errors import InvalidRequest
from parley_gateway.errors import install_error_handlers
from parley_gateway.limits import BodyLimit
from parley_gateway.routes.media import multipart_file
from parley_gateway.sse import encode_event
from parley_orchestrator.image_turns import answer_text

BOUNDARY = "----parleyBoundary7MA4YWxkTrZu0gW"
FILE = bytes(range(256)) * 40 + b"\r\n--not-a-boundary\r\n" + b"tail"


def multipart_body(file: bytes = FILE, *, with_file: bool = True) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nchat\r\n'.encode(),
    ]
    if with_file:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cat photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode()
            + file
            + b"\r\n"
        )
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@pytest.mark.parametrize("chunk", [1, 7, 64, 100_000])
async def test_the_file_part_streams_out_whatever_the_chunking(chunk: int) -> None:
    part, chunks = await multipart_file(pieces(multipart_body(), chunk), f"multipart/form-data; boundary={BOUNDARY}")
    assert (part.filename, part.content_type) == ("cat photo.jpg", "image/jpeg")
    assert b"".join([c async for c in chunks]) == FILE


async def test_multipart_without_a_file_or_cut_short_is_refused() -> None:
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    with pytest.raises(InvalidRequest) as missing:
        await multipart_file(pieces(multipart_body(with_file=False), 50), content_type)
    assert missing.value.code == "missing_file"
    body = multipart_body()
    _, chunks = await multipart_file(pieces(body[: len(body) // 2], 50), content_type)
    with pytest.raises(InvalidRequest) as cut:
        _ = [c async for c in chunks]
    assert cut.value.code == "truncated_upload"
    with pytest.raises(InvalidRequest):
        await multipart_file(pieces(body, 50), "multipart/form-data")


def limited_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/media")
    @app.post("/v1/conversations")
    async def count(request: Request) -> dict[str, int]:
        return {"bytes": sum([len(c) async for c in request.stream()])}

    app.add_middleware(BodyLimit, max_bytes=1_000_000, path_limits={"/v1/media": 20_000_000})
    return app


async def test_uploads_get_their_own_body_limit_and_other_paths_keep_1_mb() -> None:
    transport = httpx.ASGITransport(app=limited_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        three_mb = b"x" * 3_000_000
        assert (await client.post("/v1/media", content=three_mb)).json() == {"bytes": 3_000_000}
        refused = await client.post("/v1/conversations", content=three_mb)
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
        # Without a Content-Length the limit is enforced while the body is read.
        streamed = await client.post("/v1/conversations", content=pieces(three_mb, 64_000))
        assert streamed.status_code == 413
        too_big = await client.post("/v1/media", content=pieces(b"x" * 21_000_000, 1_000_000))
        assert too_big.status_code == 413 and "20000000" in too_big.json()["error"]["message"]


def test_image_frames_carry_the_media() -> None:
    event = chat_pb2.StreamEvent(
        response_id="r1",
        conversation_id="c1",
        seq=3,
        image=chat_pb2.StreamImage(
            media_id="med_0123456789abcdef01234567", url="http://s3/x", mime_type="image/webp", width=1024, height=768
        ),
    )
    lines = encode_event(event).decode().split("\n")
    assert lines[1] == "event: image"
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "response_id": "r1",
        "conversation_id": "c1",
        "media_id": "med_0123456789abcdef01234567",
        "url": "http://s3/x",
        "mime_type": "image/webp",
        "width": 1024,
        "height": 768,
    }


@pytest.mark.parametrize(
    ("content", "prompt"),
    [
        ("/image a red fox in the snow", "a red fox in the snow"),
        ("  Draw a lighthouse\nat night", "a lighthouse\nat night"),
        ("Generate an image of two cats", "two cats"),
        ("make a picture of a boat", "a boat"),
        ("/imagine  neon city", "neon city"),
        ("Can you draw a cat?", None),
        ("drawing is fun", None),
        ("/image", None),
        ("What is in this image?", None),
    ],
)
def test_which_messages_ask_for_an_image(content: str, prompt: str | None) -> None:
    assert image_prompt(content) == prompt


def test_the_answer_text_names_the_media() -> None:
    text = answer_text("a fox", chat_pb2.StreamImage(media_id="med_x", width=1024, height=1024))
    assert "med_x" in text and "1024x1024" in text


def test_images_go_on_the_last_user_message() -> None:
    prompt = [
        chat_pb2.PromptMessage(role="system", content="be brief"),
        chat_pb2.PromptMessage(role="user", content="hello"),
        chat_pb2.PromptMessage(role="assistant", content="hi"),
        chat_pb2.PromptMessage(role="user", content="what is this?"),
    ]
    image = chat_pb2.ImagePart(media_id="med_a", data=b"...", mime_type="image/webp", detail="high")
    out = with_images(prompt, [image])
    assert [len(m.images) for m in out] == [0, 0, 0, 1]
    assert out[3].content == "what is this?" and out[3].images[0].media_id == "med_a"
    assert not prompt[3].images, "the caller's prompt is left as it was"
    only_system = with_images(prompt[:1], [image])
    assert only_system[-1].role == "user" and len(only_system[-1].images) == 1
