"""Media in chat turns, as a client sees them: an uploaded image reaches the provider in its own
wire format (at most 2048 px), another user's media is refused before anything is sent, and
image generation, in a chat turn and through the OpenAI-compatible endpoint.

The wire-format tests run their own stack whose worker calls the real OpenAI, Anthropic and
Gemini adapters against the fake provider server, which records every request body."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image
from redis.asyncio import Redis

from parley_dev.infra import Infra
from parley_dev.stack import Stack
from tests.support.api import api_client, assert_error
from tests.support.keys import DEV_KEY
from tests.support.media import photo_jpeg, short_video
from tests.support.models import model
from tests.support.polling import eventually
from tests.support.sse import Frame, read_all, text_of
from tests.support.stacks import own_stack, stack_config

ALICE_KEY = "pk_test_alice_" + secrets.token_urlsafe(18)
MALLORY_KEY = "pk_test_mallory_" + secrets.token_urlsafe(18)
FAKE_PROVIDERS = {"fake-openai": "openai", "fake-anthropic": "anthropic", "fake-gemini": "gemini"}
VISION_MODELS = {"vision-openai": "fake-openai", "vision-claude": "fake-anthropic", "vision-gemini": "fake-gemini"}


async def send(client: httpx.AsyncClient, conversation: str, **body: Any) -> list[Frame]:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        return await read_all(reply)


async def new_conversation(client: httpx.AsyncClient) -> str:
    reply = await client.post("/v1/conversations", json={"title": "media"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def upload_photo(client: httpx.AsyncClient, data: bytes) -> str:
    reply = await client.post("/v1/media", files={"file": ("photo.jpg", data, "image/jpeg")})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


# Through the shared stack (demo model): ownership and image generation.


async def test_a_message_may_carry_my_image_but_not_someone_elses(
    client: httpx.AsyncClient, bob: httpx.AsyncClient, conversation: str
) -> None:
    media_id = await upload_photo(client, photo_jpeg(1600, 1200, 1))
    frames = await send(client, conversation, content="What is in this photo?", media_ids=[media_id])
    assert frames[-1].event == "done", frames[-1]
    bobs = await new_conversation(bob)
    refused = await send(bob, bobs, content="And in mine?", media_ids=[media_id])
    assert [f.event for f in refused] == ["error"]
    assert refused[-1].data["code"] == "media_not_found" and refused[-1].data["retryable"] is False
    # Refused before anything was stored: bob's conversation is still empty.
    assert (await bob.get(f"/v1/conversations/{bobs}/messages")).json()["data"] == []
    assert_error(
        await client.post(f"/v1/conversations/{conversation}/messages", json={"content": "x", "media_ids": ["nope"]}),
        400,
        "invalid_request",
    )


async def test_a_drafts_token_count_includes_its_images(client: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    media_id = await upload_photo(client, photo_jpeg(1600, 1200, 1))
    draft = {"content": "What is in this photo?", "model": "demo"}
    plain = (await client.post("/v1/tokens/count", json=draft)).json()
    high = (await client.post("/v1/tokens/count", json={**draft, "media_ids": [media_id]})).json()
    low = (await client.post("/v1/tokens/count", json={**draft, "media_ids": [media_id], "image_detail": "low"})).json()
    # The demo model counts images by OpenAI's rule: 1600x1200 is scaled to 1024x768, so
    # 2x2 tiles of 170 tokens + 85; "low" is a flat 85.
    assert high["input_tokens"] - plain["input_tokens"] == 765
    assert low["input_tokens"] - plain["input_tokens"] == 85
    assert_error(await bob.post("/v1/tokens/count", json={**draft, "media_ids": [media_id]}), 404, "media_not_found")


async def test_a_chat_turn_can_ask_for_an_image(client: httpx.AsyncClient, conversation: str) -> None:
    frames = await send(client, conversation, content="/image a red fox in the snow")
    kinds = [f.event for f in frames]
    assert kinds == ["meta", "image", "delta", "usage", "done"], kinds
    image = frames[1].data
    assert image["media_id"].startswith("med_") and image["mime_type"] == "image/webp"
    assert (image["width"], image["height"]) == (1024, 1024)
    async with httpx.AsyncClient() as anyone:
        picture = await anyone.get(image["url"])
    assert picture.status_code == 200 and Image.open(io.BytesIO(picture.content)).size == (1024, 1024)
    assert image["media_id"] in text_of(frames)
    media = await client.get(f"/v1/media/{image['media_id']}")
    assert media.status_code == 200 and media.json()["origin"] == "generated"
    assert media.json()["prompt"] == "a red fox in the snow"
    messages = (await client.get(f"/v1/conversations/{conversation}/messages")).json()["data"]
    answer = next(m for m in messages if m["role"] == "assistant" and image["media_id"] in m["content"])
    assert answer["model"] == "images" and answer["status"] == "complete"


async def test_openai_sdk_generates_images(stack: Stack) -> None:
    sdk = openai.AsyncOpenAI(base_url=stack.base_url + "/v1", api_key=DEV_KEY, max_retries=0)
    try:
        by_url = await sdk.images.generate(prompt="a lighthouse at dusk", size="512x512", response_format="url")
        assert by_url.data and by_url.data[0].url
        async with httpx.AsyncClient() as anyone:
            fetched = await anyone.get(by_url.data[0].url)
        assert Image.open(io.BytesIO(fetched.content)).size == (512, 512)
        inline = await sdk.images.generate(prompt="a lighthouse at dusk", n=2, response_format="b64_json")
        assert inline.data is not None and len(inline.data) == 2
        decoded = Image.open(io.BytesIO(base64.b64decode(inline.data[0].b64_json or "")))
        assert decoded.format == "WEBP" and decoded.size == (1024, 1024)
        with pytest.raises(openai.BadRequestError):
            await sdk.images.generate(prompt="x", size="99999x1")
    finally:
        await sdk.close()


# A stack of its own, whose worker speaks the providers' real wire formats to the fake server.
@pytest.fixture(scope="module")
async def vision_stack(infra: Infra, fake: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("vision-stack")
    base_urls = {"openai": fake + "/v1", "anthropic": fake, "gemini": fake}
    registry = {
        "default_model": "demo",
        "providers": {
            "demo": {"kind": "demo"},
            **{name: {"kind": kind, "base_url": base_urls[kind]} for name, kind in FAKE_PROVIDERS.items()},
        },
        "models": {
            "demo": _model("demo"),
            **{model: _model(provider) for model, provider in VISION_MODELS.items()},
        },
    }
    config = stack_config(
        infra,
        workdir,
        "t",
        ALICE_KEY,
        {
            "PARLEY_API_KEYS": f'{{"mallory": "{MALLORY_KEY}"}}',
            "PARLEY_WORKER_PROVIDERS": '["demo", "fake-openai", "fake-anthropic", "fake-gemini"]',
            "PARLEY_PROVIDER_API_KEYS": '{"fake-openai": "k1", "fake-anthropic": "k2", "fake-gemini": "k3"}',
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "10",
        },
        registry=registry,
    )
    async with own_stack(config) as stack:
        yield stack


def _model(provider: str) -> dict[str, Any]:
    upstream = "parley-demo-1" if provider == "demo" else "vision-test-1"
    return model(provider, upstream, context_window=128_000, max_output_tokens=256)


async def seen_requests(fake: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=fake) as client:
        reply = await client.get("/_fake/requests")
    requests: list[dict[str, Any]] = reply.json()
    return requests


def decoded_picture(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def images_in(body: dict[str, Any], wire: str) -> list[tuple[str, str, Image.Image]]:
    """(mime type, detail, picture) of every image in the last user turn of a request body."""
    found: list[tuple[str, str, Image.Image]] = []
    if wire == "openai":
        for part in body["messages"][-1]["content"]:
            if part.get("type") == "image_url":
                header, _, data = part["image_url"]["url"].partition(",")
                mime = header.removeprefix("data:").removesuffix(";base64")
                found.append((mime, part["image_url"].get("detail", ""), decoded_picture(data)))
    elif wire == "anthropic":
        for block in body["messages"][-1]["content"]:
            if block.get("type") == "image":
                source = block["source"]
                assert source["type"] == "base64"
                found.append((source["media_type"], "", decoded_picture(source["data"])))
    else:
        for part in body["contents"][-1]["parts"]:
            if "inlineData" in part:
                inline = part["inlineData"]
                found.append((inline["mimeType"], "", decoded_picture(inline["data"])))
    return found


@pytest.mark.parametrize(
    ("model", "wire"), [("vision-openai", "openai"), ("vision-claude", "anthropic"), ("vision-gemini", "gemini")]
)
async def test_the_provider_receives_the_image_in_its_own_wire_format(
    vision_stack: Stack, fake: str, model: str, wire: str
) -> None:
    async with api_client(vision_stack.base_url, ALICE_KEY, 60) as alice:
        media_id = await upload_photo(alice, photo_jpeg(4000, 3000, 6))
        conversation = await new_conversation(alice)
        marker = uuid.uuid4().hex
        frames = await send(
            alice, conversation, content=f"Describe this photo {marker}", model=model, media_ids=[media_id]
        )
        assert frames[-1].event == "done", frames[-1]
        low = await send(
            alice, conversation, content=f"And small {marker}", model=model, media_ids=[media_id], image_detail="low"
        )
        assert low[-1].event == "done", low[-1]
    requests = [r for r in await seen_requests(fake) if marker in str(r["body"])]
    assert len(requests) == 2, [r["path"] for r in requests]
    assert all(r["format"] == wire for r in requests)
    ((mime, detail, picture),) = images_in(requests[0]["body"], wire)
    assert mime == "image/webp" and picture.format == "WEBP"
    assert picture.size == (1536, 2048), "not the upright 2048 px rendition"
    if wire == "openai":
        assert detail == "high"
    ((_, low_detail, small),) = images_in(requests[1]["body"], wire)
    assert small.size == (768, 1024)
    if wire == "openai":
        assert low_detail == "low"


async def test_a_video_reaches_a_provider_as_its_poster_and_sampled_frames(vision_stack: Stack, fake: str) -> None:
    async with api_client(vision_stack.base_url, ALICE_KEY, 60) as alice:
        uploaded = await alice.post("/v1/media", files={"file": ("clip.mp4", short_video(3.0), "video/mp4")})
        assert uploaded.status_code == 201, uploaded.text
        video = uploaded.json()
        assert video["kind"] == "video" and (video["width"], video["height"]) == (320, 240)
        conversation = await new_conversation(alice)
        marker = uuid.uuid4().hex
        frames = await send(
            alice,
            conversation,
            content=f"What happens in this clip? {marker}",
            model="vision-claude",
            media_ids=[video["id"]],
        )
        assert frames[-1].event == "done", frames[-1]
    (request,) = [r for r in await seen_requests(fake) if marker in str(r["body"])]
    pictures = [picture for _, _, picture in images_in(request["body"], "anthropic")]
    # The poster, then the frames sampled across the clip (this stack's media service takes 4).
    assert len(pictures) == 5
    assert all(p.size == (320, 240) for p in pictures), [p.size for p in pictures]
    reds = [p.convert("RGB").getpixel((300, 200))[0] for p in pictures[1:]]  # type: ignore[index]
    assert reds == sorted(reds) and reds[-1] - reds[0] > 100, "the frames are taken across the clip"


async def test_another_users_media_never_reaches_a_provider(vision_stack: Stack, fake: str) -> None:
    async with (
        api_client(vision_stack.base_url, ALICE_KEY) as alice,
        api_client(vision_stack.base_url, MALLORY_KEY) as mallory,
    ):
        media_id = await upload_photo(alice, photo_jpeg(800, 600, 1))
        conversation = await new_conversation(mallory)
        marker = uuid.uuid4().hex
        frames = await send(
            mallory, conversation, content=f"steal {marker}", model="vision-openai", media_ids=[media_id]
        )
        assert frames[-1].event == "error" and frames[-1].data["code"] == "media_not_found"
        assert_error(await mallory.get(f"/v1/media/{media_id}"), 404, "media_not_found")
    assert not [r for r in await seen_requests(fake) if marker in str(r["body"])]


# A stack of its own whose images have a price, with small monthly budgets and one stream a user.
IMAGE_PRICE_MICROS = 30_000  # $0.03 a 1024x1024 image (the default size, chat turns)
SMALL_IMAGE_PRICE_MICROS = 10_000  # $0.01 a 512x512 one
PRICED_KEYS = {name: f"pk_test_{name}_" + secrets.token_urlsafe(18) for name in ("ann", "cat", "dan")}


@pytest.fixture(scope="module")
async def priced_stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("priced-images-stack")
    registry = {
        "default_model": "demo",
        "providers": {"demo": {"kind": "demo"}},
        "models": {"demo": _model("demo")},
        "images": {"price_per_image": IMAGE_PRICE_MICROS / 1e6, "size_prices": {"512x512": 0.01}},
    }
    config = stack_config(
        infra,
        workdir,
        "ti",
        ALICE_KEY,
        {
            "PARLEY_API_KEYS": json.dumps({name: key for name, key in PRICED_KEYS.items()}),
            "PARLEY_PLANS": json.dumps(
                {"default": {"monthly_cost_micros": 1_000_000}, "tight": {"monthly_cost_micros": 50_000}}
            ),
            "PARLEY_USER_PLANS": json.dumps({"cat": "tight"}),
            "PARLEY_MAX_STREAMS_PER_USER": "1",
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "10",
            "PARLEY_DEMO_TOKENS_PER_S": "4",
        },
        registry=registry,
    )
    async with own_stack(config) as stack:
        yield stack


def priced_client(stack: Stack, name: str) -> httpx.AsyncClient:
    return api_client(stack.base_url, PRICED_KEYS[name], 60)


async def cost_remaining(client: httpx.AsyncClient) -> int:
    reply = await client.get("/v1/models")
    assert reply.status_code == 200, reply.text
    return int(reply.headers["X-Budget-Cost-Remaining-Micros"])


async def remaining_becomes(client: httpx.AsyncClient, expected: int) -> None:
    """The chat turn's charge is settled by the orchestrator a moment after `done`."""

    async def settled() -> bool:
        return await cost_remaining(client) == expected

    await eventually(settled, 5, f"{expected} micro-dollars remaining")


async def streams_held(stack: Stack, user: str) -> int:
    redis = Redis.from_url(stack.config.infra.redis_url)
    try:
        return int(await redis.zcard(f"{stack.config.namespace}:user-streams:{user}"))
    finally:
        await redis.aclose()


async def test_generated_images_are_charged_to_the_monthly_budget(priced_stack: Stack) -> None:
    async with priced_client(priced_stack, "ann") as ann:
        before = await cost_remaining(ann)
        assert before == 1_000_000
        reply = await ann.post("/v1/images/generations", json={"prompt": "two owls", "n": 2, "size": "512x512"})
        assert reply.status_code == 200, reply.text
        assert set(reply.json()) == {"created", "data", "size", "output_format"}, "OpenAI's shape, no cost field"
        assert await cost_remaining(ann) == before - 2 * SMALL_IMAGE_PRICE_MICROS
        # A generation the media service refuses costs nothing.
        assert_error(
            await ann.post("/v1/images/generations", json={"prompt": "huge", "size": "4000x4000"}), 400, "invalid_size"
        )
        assert await cost_remaining(ann) == before - 2 * SMALL_IMAGE_PRICE_MICROS

        frames = await send(ann, await new_conversation(ann), content="/image an owl at night")
        assert [f.event for f in frames] == ["meta", "image", "delta", "usage", "done"], frames
        usage = next(f.data for f in frames if f.event == "usage")
        assert usage["cost_micros"] == IMAGE_PRICE_MICROS, usage
        await remaining_becomes(ann, before - 2 * SMALL_IMAGE_PRICE_MICROS - IMAGE_PRICE_MICROS)


async def test_an_image_the_budget_cannot_cover_is_refused(priced_stack: Stack) -> None:
    async with priced_client(priced_stack, "cat") as cat:
        assert await cost_remaining(cat) == 50_000
        # Two default-size images cost 60,000: more than is left; nothing is generated or charged.
        assert_error(
            await cat.post("/v1/images/generations", json={"prompt": "two cats", "n": 2}), 429, "user_budget_exceeded"
        )
        assert await cost_remaining(cat) == 50_000
        reply = await cat.post("/v1/images/generations", json={"prompt": "one cat"})
        assert reply.status_code == 200, reply.text
        assert await cost_remaining(cat) == 20_000
        # 20,000 left: a chat `/image` (30,000) is refused before anything is stored or drawn …
        conversation = await new_conversation(cat)
        refused = await cat.post(f"/v1/conversations/{conversation}/messages", json={"content": "/image a cat"})
        assert_error(refused, 429, "user_budget_exceeded")
        assert (await cat.get(f"/v1/conversations/{conversation}/messages")).json()["data"] == []
        # … a 512x512 one (10,000) is not.
        small = await cat.post("/v1/images/generations", json={"prompt": "a kitten", "size": "512x512"})
        assert small.status_code == 200, small.text
        assert await cost_remaining(cat) == 10_000


async def test_an_image_generation_holds_a_stream_slot(priced_stack: Stack) -> None:
    async with priced_client(priced_stack, "dan") as dan:
        conversation = await new_conversation(dan)
        # A slow text answer holds dan's only stream slot: no image while it runs.
        async with dan.stream(
            "POST",
            f"/v1/conversations/{conversation}/messages",
            json={"content": "hello there", "max_output_tokens": 4},
        ) as streaming:
            assert streaming.status_code == 200
            assert_error(await dan.post("/v1/images/generations", json={"prompt": "a dog"}), 429, "too_many_streams")
            assert (await read_all(streaming))[-1].event == "done"
        # The worker gives the answer's slot back just after `done`, the gateway the connection's.

        async def slots_back() -> bool:
            return not await streams_held(priced_stack, "dan")

        await eventually(slots_back, 5, "dan's stream slots given back")
        # An image being generated holds the slot: seen in Redis while it runs, given back after.
        generating = asyncio.ensure_future(
            dan.post("/v1/images/generations", json={"prompt": "four dogs", "n": 4, "size": "2048x2048"})
        )
        held = 0
        while not generating.done() and not held:
            held = await streams_held(priced_stack, "dan")
            await asyncio.sleep(0.005)
        assert held == 1, "the generation ran without a stream slot"
        assert (await generating).status_code == 200
        assert await streams_held(priced_stack, "dan") == 0
        # A generation that fails gives its slot back too.
        assert_error(
            await dan.post("/v1/images/generations", json={"prompt": "huge", "size": "4000x4000"}), 400, "invalid_size"
        )
        assert await streams_held(priced_stack, "dan") == 0
        assert (await dan.post("/v1/images/generations", json={"prompt": "a puppy"})).status_code == 200
