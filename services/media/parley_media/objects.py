"""Object storage over the S3 API (the `minio` SDK): MinIO in production, any S3-compatible
server in tests and `make run`.

The SDK blocks, so every call runs on this store's own small thread pool: storage calls never
wait behind image processing, and the event loop never waits on either. Presigned URLs are
computed locally (the region is configured), signed for the endpoint clients will use.

Presigned uploads are form POSTs with a signed policy, not PUTs: the policy fixes the key, the
content type, the expiry and a `content-length-range`, so the store itself refuses a larger
file (MinIO, S3 and SeaweedFS answer 400 EntityTooLarge and keep nothing). A presigned PUT
cannot bound its body.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.datatypes import PostPolicy
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from parley_common.errors import NotFound, PayloadTooLarge, Unavailable

T = TypeVar("T")
_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchUpload"}


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str


@dataclass(frozen=True)
class ListedObject:
    key: str
    size: int
    modified_ms: int


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]


def _client(endpoint: str, access_key: str | None, secret_key: str | None, region: str, timeout_s: float) -> Minio:
    parsed = urlparse(endpoint)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(5.0, timeout_s), read=timeout_s),
        maxsize=32,
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    return Minio(
        parsed.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=parsed.scheme == "https",
        region=region,
        http_client=http,
    )


class ObjectStore:
    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        region: str,
        access_key: str | None,
        secret_key: str | None,
        public_endpoint: str | None = None,
        timeout_s: float = 30.0,
        threads: int = 16,
    ) -> None:
        self.bucket = bucket
        # Where clients send form uploads (path style: every S3-compatible server takes it).
        self.upload_url = f"{(public_endpoint or endpoint).rstrip('/')}/{bucket}"
        self.client = _client(endpoint, access_key, secret_key, region, timeout_s)
        self.signer = (
            _client(public_endpoint, access_key, secret_key, region, timeout_s) if public_endpoint else self.client
        )
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, functools.partial(call, *args, **kwargs))
        except S3Error as err:
            if err.code in _MISSING:
                raise NotFound("media not found", code="media_not_found") from None
            raise Unavailable(f"object storage refused the request: {err.code}", code="storage_unavailable") from None
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(
                f"object storage is unreachable: {type(exc).__name__}", code="storage_unavailable"
            ) from None

    async def ensure_bucket(self) -> None:
        if not await self._run(self.client.bucket_exists, self.bucket):
            try:
                await self._run(self.client.make_bucket, self.bucket)
            except Unavailable:
                # Another replica made it at the same moment.
                if not await self._run(self.client.bucket_exists, self.bucket):
                    raise

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._run(
            self.client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
        )

    async def put_json(self, key: str, value: Any) -> None:
        await self.put(key, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    async def get(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes; PayloadTooLarge past `max_bytes` (read no further than that)."""
        return await self._run(self._get_bounded, key, max_bytes)

    def _get_bounded(self, key: str, max_bytes: int) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            data = response.read(max_bytes + 1)
        finally:
            response.close()
            response.release_conn()
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"the upload is larger than {max_bytes} bytes")
        return bytes(data)

    async def get_json(self, key: str, max_bytes: int = 1_000_000) -> Any:
        return json.loads(await self.get(key, max_bytes))

    async def stat(self, key: str) -> StoredObject | None:
        try:
            found = await self._run(self.client.stat_object, self.bucket, key)
        except NotFound:
            return None
        return StoredObject(int(found.size or 0), str(found.content_type or ""))

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._run(self._delete_all, list(keys))

    async def delete_prefix(self, prefix: str) -> None:
        def delete_listed() -> None:
            names = [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]
            self._delete_all([n for n in names if n])

        await self._run(delete_listed)

    async def list_objects(self, prefix: str, start_after: str, limit: int) -> list[ListedObject]:
        """At most `limit` objects under `prefix`, in key order, after `start_after`."""

        def first() -> list[ListedObject]:
            listed: Iterator[Any] = self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, start_after=start_after or None
            )
            found: list[ListedObject] = []
            for o in listed:
                modified = o.last_modified.timestamp() if o.last_modified else 0.0
                found.append(ListedObject(str(o.object_name), int(o.size or 0), int(modified * 1000)))
                if len(found) >= limit:
                    break
            return found

        return await self._run(first)

    def _delete_all(self, keys: list[str]) -> None:
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise Unavailable(
                f"object storage kept {len(errors)} objects it was asked to delete", code="storage_unavailable"
            )

    def presign_get(self, key: str, expiry_s: int) -> str:
        return self.signer.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expiry_s))

    def presign_post(self, key: str, content_type: str, max_bytes: int, expiry_s: int) -> PresignedPost:
        """A form upload of exactly this key, at most `max_bytes` (and at least one byte), with
        this Content-Type (when set), until `expiry_s` from now."""
        policy = PostPolicy(self.bucket, datetime.now(UTC) + timedelta(seconds=expiry_s))
        policy.add_equals_condition("key", key)
        policy.add_content_length_range_condition(1, max_bytes)
        fields = {"key": key}
        if content_type:
            policy.add_equals_condition("Content-Type", content_type)
            fields["Content-Type"] = content_type
        fields.update(self.signer.presigned_post_policy(policy))
        return PresignedPost(self.upload_url, fields)
