"""Uploads as a client makes them: direct (multipart or raw), presigned (PUT to object storage,
then complete), the files refused, and media that stays its owner's. Object storage is a real
S3-compatible server with credentials: a request signed with anything else is refused."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from minio import Minio
from minio.error import S3Error
from PIL import Image

from parley_dev.stack import Stack

from ..unit.test_media_hostile import decode_bomb_webm
from ..unit.test_media_images import alpha_png, decompression_bomb, photo_jpeg
from .test_isolation_and_errors import assert_error

JPEG_PHOTO = photo_jpeg()


def rendition(media: dict[str, object], name: str) -> dict[str, object]:
    renditions = media["renditions"]
    assert isinstance(renditions, dict)
    found = renditions[name]
    assert isinstance(found, dict)
    return found


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str, name: str = "photo.jpg") -> httpx.Response:
    return await client.post("/v1/media", files={"file": (name, data, content_type)})


def stored_objects(stack: Stack, user: str = "dev") -> set[str]:
    """Every object kept for `user` in the bucket: media and their renditions, pending uploads."""
    assert stack.s3 is not None
    owner = Minio(
        stack.s3.url.removeprefix("http://"),
        access_key=stack.s3.access_key,
        secret_key=stack.s3.secret_key,
        secure=False,
        region="us-east-1",
    )
    return {
        str(o.object_name)
        for prefix in (f"users/{user}/", f"uploads/{user}/")
        for o in owner.list_objects("parley-media", prefix=prefix, recursive=True)
    }


async def test_a_photo_upload_is_oriented_stripped_and_fitted(client: httpx.AsyncClient) -> None:
    reply = await upload(client, JPEG_PHOTO, "image/jpeg")
    assert reply.status_code == 201, reply.text
    media = reply.json()
    assert media["id"].startswith("med_") and media["kind"] == "image" and media["mime_type"] == "image/jpeg"
    assert (media["width"], media["height"]) == (3000, 4000)
    high = rendition(media, "high")
    assert (high["width"], high["height"]) == (1536, 2048) and high["mime_type"] == "image/webp"
    async with httpx.AsyncClient() as anyone:
        fetched = await anyone.get(str(high["url"]))
    assert fetched.status_code == 200
    picture = Image.open(io.BytesIO(fetched.content))
    assert picture.format == "WEBP" and picture.size == (1536, 2048)
    assert not picture.getexif() and b"GPS" not in fetched.content and b"Exif" not in fetched.content
    again = await client.get(f"/v1/media/{media['id']}")
    assert again.status_code == 200 and again.json()["renditions"]["thumb"]["width"] == 192


async def test_a_raw_body_upload_works_too(client: httpx.AsyncClient) -> None:
    reply = await client.post(
        "/v1/media", content=alpha_png(), headers={"content-type": "image/png"}, params={"filename": "dot.png"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["mime_type"] == "image/png" and rendition(reply.json(), "high")["width"] == 640


async def test_a_presigned_upload_goes_straight_to_object_storage(
    client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    created = await client.post("/v1/media/uploads", json={"content_type": "image/jpeg", "size_bytes": len(JPEG_PHOTO)})
    assert created.status_code == 201, created.text
    pending = created.json()
    assert pending["method"] == "PUT" and pending["max_bytes"] == 20_000_000
    async with httpx.AsyncClient() as storage:
        put = await storage.put(pending["upload_url"], content=JPEG_PHOTO, headers=pending["headers"])
    assert put.status_code == 200, put.text
    assert_error(await bob.post(pending["complete_url"]), 404, "upload_not_found")
    completed = await client.post(pending["complete_url"])
    assert completed.status_code == 200, completed.text
    media = completed.json()
    assert media["id"] == pending["id"] and rendition(media, "high")["height"] == 2048
    # Completing again is harmless: the same media.
    assert (await client.post(pending["complete_url"])).json()["id"] == media["id"]


async def test_presigned_uploads_are_checked_like_direct_ones(stack: Stack, client: httpx.AsyncClient) -> None:
    assert_error(
        await client.post("/v1/media/uploads", json={"content_type": "image/jpeg", "size_bytes": 21_000_000}),
        413,
        "payload_too_large",
    )
    assert_error(
        await client.post("/v1/media/uploads", json={"content_type": "text/html"}), 400, "unsupported_media_type"
    )
    # Found by schemathesis: a size past what the contract can carry is a 4xx, not a 500.
    huge = await client.post("/v1/media/uploads", json={"content_type": "image/png", "size_bytes": 2**70})
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "invalid_request", huge.text
    pending = (await client.post("/v1/media/uploads", json={"content_type": "image/png"})).json()
    assert_error(await client.post(pending["complete_url"]), 409, "upload_incomplete")
    async with httpx.AsyncClient() as storage:
        await storage.put(pending["upload_url"], content=JPEG_PHOTO, headers=pending["headers"])
    assert_error(await client.post(pending["complete_url"]), 400, "content_type_mismatch")
    # Refused for good: nothing of it is kept.
    assert_error(await client.post(pending["complete_url"]), 404, "upload_not_found")
    big = (await client.post("/v1/media/uploads", json={"content_type": "image/jpeg"})).json()
    async with httpx.AsyncClient(timeout=60) as storage:
        await storage.put(big["upload_url"], content=b"\xff\xd8\xff" + os.urandom(21_000_000), headers=big["headers"])
    assert_error(await client.post(big["complete_url"]), 413, "payload_too_large")
    kept = stored_objects(stack)
    assert not {k for k in kept if pending["id"] in k or big["id"] in k}, "a refused upload left objects behind"


@pytest.mark.parametrize(
    ("name", "data", "content_type", "status", "code"),
    [
        ("empty", b"", "image/jpeg", 400, "empty_file"),
        ("lie", photo_jpeg(800, 600, 1), "image/png", 400, "content_type_mismatch"),
        ("truncated", photo_jpeg(1600, 1200, 1)[:30_000], "image/jpeg", 400, "corrupt_image"),
        ("bomb", decompression_bomb(), "image/png", 400, "image_too_large"),
        ("not an image", b"%PDF-1.7\n" + b"0" * 4000, "application/octet-stream", 400, "unsupported_media_type"),
        ("declared html", b"<html></html>", "text/html", 400, "unsupported_media_type"),
    ],
)
async def test_unusable_files_get_a_clear_4xx_and_nothing_is_stored(
    stack: Stack, client: httpx.AsyncClient, name: str, data: bytes, content_type: str, status: int, code: str
) -> None:
    before = stored_objects(stack)
    assert_error(await upload(client, data, content_type), status, code)
    assert stored_objects(stack) == before


async def test_a_21_mb_upload_is_refused_while_it_is_read(stack: Stack, client: httpx.AsyncClient) -> None:
    before = stored_objects(stack)
    big = b"\xff\xd8\xff\xe0" + os.urandom(21_000_000)
    assert_error(await upload(client, big, "image/jpeg"), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(21):
            yield b"\xff\xd8\xff" + os.urandom(1_000_000 - 3)

    # Raw, without a Content-Length: the limit stops it at the 20 MB mark.
    streamed = await client.post("/v1/media", content=chunks(), headers={"content-type": "image/jpeg"})
    assert_error(streamed, 413, "payload_too_large")
    assert stored_objects(stack) == before


async def test_another_user_can_neither_see_nor_use_my_media(client: httpx.AsyncClient, bob: httpx.AsyncClient) -> None:
    media = (await upload(client, photo_jpeg(1200, 900, 1), "image/jpeg")).json()
    assert_error(await bob.get(f"/v1/media/{media['id']}"), 404, "media_not_found")
    assert_error(await bob.delete(f"/v1/media/{media['id']}"), 404, "media_not_found")
    assert (await client.get(f"/v1/media/{media['id']}")).status_code == 200
    assert (await client.delete(f"/v1/media/{media['id']}")).status_code == 204
    assert_error(await client.get(f"/v1/media/{media['id']}"), 404, "media_not_found")


async def test_object_storage_refuses_a_wrong_signature(stack: Stack, client: httpx.AsyncClient) -> None:
    assert stack.s3 is not None
    media = (await upload(client, alpha_png(), "image/png")).json()
    url = str(rendition(media, "high")["url"])
    async with httpx.AsyncClient() as anyone:
        assert (await anyone.get(url)).status_code == 200
        assert (await anyone.get(url.split("?")[0])).status_code == 403, "anonymous read allowed"
        signature = url.rsplit("X-Amz-Signature=", 1)[1][:64]
        forged = url.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
        assert (await anyone.get(forged)).status_code == 403, "a forged presigned URL was accepted"
    endpoint = stack.s3.url.removeprefix("http://")
    impostor = Minio(
        endpoint, access_key=stack.s3.access_key, secret_key="not-the-secret", secure=False, region="us-east-1"
    )
    with pytest.raises(S3Error) as refused:
        list(impostor.list_objects("parley-media", prefix="users/"))
    assert refused.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    owner = Minio(
        endpoint, access_key=stack.s3.access_key, secret_key=stack.s3.secret_key, secure=False, region="us-east-1"
    )
    assert any(o.object_name for o in owner.list_objects("parley-media", prefix="users/dev/", recursive=True))


async def test_a_video_decode_bomb_does_not_starve_another_users_upload(
    stack: Stack, client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Two ~100 kB WebMs of one 4096x4096 keyframe and 399 "nothing changed" frames (each a
    full-size decode: ~90 s of CPU apiece when every frame up to a sample is decoded), then
    another user's 103-byte PNG: the PNG is processed at once, the videos within bounds."""
    bomb = decode_bomb_webm()
    before = stored_objects(stack, "bob")
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.base_url, headers=client.headers, timeout=120) as slow:
        bombs = [asyncio.create_task(upload(slow, bomb, "video/webm", "bomb.webm")) for _ in range(2)]
        await asyncio.sleep(1.0)
        small = time.monotonic()
        png = await upload(bob, alpha_png(8, 8), "image/png", "dot.png")
        waited = time.monotonic() - small
        assert png.status_code == 201, png.text
        assert waited < 15, f"a 103-byte PNG waited {waited:.1f} s behind another user's videos"
        replies = await asyncio.gather(*bombs)
    for reply in replies:
        # Sampled within the decode budget, or stopped at the deadline with a typed error.
        assert reply.status_code == 201 or reply.json()["error"]["code"] == "media_too_complex", reply.text
    assert time.monotonic() - started < 90
    assert len(stored_objects(stack, "bob")) > len(before)
