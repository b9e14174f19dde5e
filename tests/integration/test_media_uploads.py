"""Uploads as a client makes them: direct (multipart or raw), presigned (a form POST to object
storage, then complete), the files refused, and media that stays its owner's. Object storage is a real
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
from tests.support.api import assert_error
from tests.support.media import alpha_png, decode_bomb_webm, decompression_bomb, photo_jpeg
from tests.support.polling import eventually

JPEG_PHOTO = photo_jpeg()


def rendition(media: dict[str, object], name: str) -> dict[str, object]:
    renditions = media["renditions"]
    assert isinstance(renditions, dict)
    found = renditions[name]
    assert isinstance(found, dict)
    return found


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str, name: str = "photo.jpg") -> httpx.Response:
    return await client.post("/v1/media", files={"file": (name, data, content_type)})


def bucket_owner(stack: Stack) -> Minio:
    assert stack.s3 is not None
    return Minio(
        stack.s3.url.removeprefix("http://"),
        access_key=stack.s3.access_key,
        secret_key=stack.s3.secret_key,
        secure=False,
        region="us-east-1",
    )


def stored_objects(stack: Stack, user: str = "dev") -> set[str]:
    """Every object kept for `user` in the bucket: media and their renditions, pending uploads."""
    owner = bucket_owner(stack)
    return {
        str(o.object_name)
        for prefix in (f"users/{user}/", f"uploads/{user}/")
        for o in owner.list_objects("parley-media", prefix=prefix, recursive=True)
    }


async def send(pending: dict[str, object], data: bytes, name: str = "photo.jpg") -> httpx.Response:
    """The client's upload to object storage: a multipart form POST, the signed fields first."""
    assert pending["method"] == "POST"
    fields = pending["fields"]
    assert isinstance(fields, dict)
    async with httpx.AsyncClient(timeout=120) as storage:
        return await storage.post(str(pending["upload_url"]), data=fields, files={"file": (name, data)})


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
    assert pending["method"] == "POST" and pending["max_bytes"] == len(JPEG_PHOTO)
    sent = await send(pending, JPEG_PHOTO)
    assert sent.status_code == 204, sent.text
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
    # The store refuses another declared type than the one signed into the form.
    lying = {**pending, "fields": {**pending["fields"], "Content-Type": "image/jpeg"}}
    assert (await send(lying, JPEG_PHOTO)).status_code == 403
    assert (await send(pending, JPEG_PHOTO)).status_code == 204
    assert_error(await client.post(pending["complete_url"]), 400, "content_type_mismatch")
    # Refused for good: nothing of it is kept.
    assert_error(await client.post(pending["complete_url"]), 404, "upload_not_found")
    big = (await client.post("/v1/media/uploads", json={"content_type": "image/jpeg"})).json()
    assert big["max_bytes"] == 20_000_000
    # No size declared: the store itself refuses more than the 20 MB limit.
    too_big = await send(big, b"\xff\xd8\xff" + os.urandom(21_000_000))
    assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text, too_big.text
    assert_error(await client.post(big["complete_url"]), 409, "upload_incomplete")
    kept = stored_objects(stack)
    assert not {k for k in kept if pending["id"] in k}, "a refused upload left objects behind"
    # The refused file was not stored; only its pending record, until the sweep.
    assert {k for k in kept if big["id"] in k} == {f"uploads/dev/{big['id']}.json"}


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


def descendants(pid: int) -> set[int]:
    """The processes below `pid`: its children, theirs, and so on (from /proc)."""
    children: dict[int, set[int]] = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, set()).add(int(stat))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), set()) - found:
            found.add(child)
            todo.append(child)
    return found


async def test_a_video_decode_bomb_does_not_starve_another_users_upload(
    stack: Stack, client: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    """Two ~100 kB WebMs of one 4096x4096 keyframe and 399 "nothing changed" frames (each a
    full-size decode: ~90 s of CPU apiece when every frame up to a sample is decoded), then
    another user's 103-byte PNG: the PNG is processed at once, the videos within bounds."""
    bomb = decode_bomb_webm()
    before = stored_objects(stack, "bob")
    media = stack.processes["media"].pid
    idle = descendants(media)  # the video pool's forkserver, and the like

    async def decoding() -> bool:  # each video is decoded in a process of its own
        return bool(descendants(media) - idle)

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.base_url, headers=client.headers, timeout=120) as slow:
        bombs = [asyncio.create_task(upload(slow, bomb, "video/webm", "bomb.webm")) for _ in range(2)]
        await eventually(decoding, 20, "a video being decoded")
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


async def test_a_presigned_upload_is_bounded_by_its_declared_size(stack: Stack, client: httpx.AsyncClient) -> None:
    """1,000 bytes declared: object storage refuses 1,001 bytes and 150 MB (found by an
    outside tester: a presigned PUT took 150 MB). Nothing is stored."""
    pending = (await client.post("/v1/media/uploads", json={"content_type": "image/png", "size_bytes": 1000})).json()
    assert pending["max_bytes"] == 1000
    for size in (1001, 150_000_000):
        refused = await send(pending, b"\x89PNG" + bytes(size - 4), "dot.png")
        assert refused.status_code == 400 and "EntityTooLarge" in refused.text, (size, refused.text)
        assert not {k for k in stored_objects(stack) if k == f"uploads/dev/{pending['id']}"}, size
    assert_error(await client.post(pending["complete_url"]), 409, "upload_incomplete")
    small = alpha_png(8, 8)
    assert len(small) < 1000
    assert (await send(pending, small, "dot.png")).status_code == 204
    assert (await client.post(pending["complete_url"])).status_code == 200


async def test_an_object_larger_than_declared_is_refused_at_complete(stack: Stack, client: httpx.AsyncClient) -> None:
    """A store that does not enforce the form's size range: complete checks the real size."""
    pending = (await client.post("/v1/media/uploads", json={"content_type": "image/png", "size_bytes": 1000})).json()
    key = f"uploads/dev/{pending['id']}"
    data = alpha_png()
    assert len(data) > 1000
    bucket_owner(stack).put_object("parley-media", key, io.BytesIO(data), len(data), content_type="image/png")
    assert_error(await client.post(pending["complete_url"]), 413, "payload_too_large")
    assert not {k for k in stored_objects(stack) if pending["id"] in k}, "a refused upload left objects behind"


SHORT_UPLOADS = {
    "PARLEY_MEDIA_UPLOAD_EXPIRY_S": "2",
    "PARLEY_MEDIA_UPLOAD_SWEEP_GRACE_S": "3",
    "PARLEY_MEDIA_UPLOAD_SWEEP_INTERVAL_S": "0.5",
}


@pytest.fixture
async def short_uploads(stack: Stack) -> AsyncIterator[Stack]:
    """The media service restarted with uploads that expire after 2 s, swept 3 s later."""
    assert stack.stop_service("media") == 0
    stack.start_service("media", **SHORT_UPLOADS)
    await stack.wait_ready()
    try:
        yield stack
    finally:
        assert stack.stop_service("media") == 0
        stack.start_service("media")
        await stack.wait_ready()


def wait_until(deadline_ms: int) -> None:
    """Wait out an expiry (the behaviour under test), and a little more."""
    time.sleep(max(0.0, deadline_ms / 1000 - time.time()) + 0.2)


async def test_completing_an_expired_upload_is_refused_and_removes_it(
    short_uploads: Stack, client: httpx.AsyncClient
) -> None:
    pending = (await client.post("/v1/media/uploads", json={"content_type": "image/png"})).json()
    assert (await send(pending, alpha_png(), "dot.png")).status_code == 204
    await asyncio.to_thread(wait_until, pending["expires_at_ms"])
    assert_error(await client.post(pending["complete_url"]), 410, "upload_expired")
    assert not {k for k in stored_objects(short_uploads) if pending["id"] in k}, "an expired upload was kept"
    assert_error(await client.post(pending["complete_url"]), 404, "upload_not_found")


async def test_an_upload_never_completed_is_swept_after_its_expiry(
    short_uploads: Stack, client: httpx.AsyncClient
) -> None:
    pending = (await client.post("/v1/media/uploads", json={"content_type": "image/png"})).json()
    assert (await send(pending, alpha_png(), "dot.png")).status_code == 204
    # Only the object's own record names it: an upload's data without a record is swept too.
    orphan = (await client.post("/v1/media/uploads", json={"content_type": "image/png"})).json()
    assert (await send(orphan, alpha_png(), "dot.png")).status_code == 204
    bucket_owner(short_uploads).remove_object("parley-media", f"uploads/dev/{orphan['id']}.json")
    ids = {pending["id"], orphan["id"]}
    assert {k for k in stored_objects(short_uploads) if any(i in k for i in ids)}

    async def swept() -> bool:
        return not {k for k in stored_objects(short_uploads) if any(i in k for i in ids)}

    await eventually(swept, 15, "the expired uploads swept from the bucket", interval_s=0.5)
    # Not before its expiry and grace: 2 s + 3 s.
    assert time.time() * 1000 >= pending["expires_at_ms"] + 3000
