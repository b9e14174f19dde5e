"""A message's attachments (its media ids in history) with fresh URLs, and their removal
with their conversation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from parley.v1 import media_pb2
from parley_common.clients.media import MediaClient
from parley_common.errors import NotFound, ParleyError

log = logging.getLogger(__name__)

# Media service calls in flight at once for one listing (a page holds at most 200 messages,
# each at most 8 media).
CONCURRENCY = 16


async def resolve(media: MediaClient, user_id: str, media_ids: Iterable[str]) -> dict[str, media_pb2.Media | None]:
    """Each media with presigned URLs made now; None for one deleted since, or while the media
    service cannot answer (the messages are listed all the same, their media without URLs)."""
    wanted = list(dict.fromkeys(media_ids))
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(media_id: str) -> media_pb2.Media | None:
        async with gate:
            try:
                return await media.get_media(user_id, media_id)
            except NotFound:
                return None
            except ParleyError as exc:
                log.warning("could not resolve a message's media", extra={"media_id": media_id, "error": str(exc)})
                return None

    found = await asyncio.gather(*(one(i) for i in wanted))
    return dict(zip(wanted, found, strict=True))


async def delete_all(media: MediaClient, user_id: str, media_ids: Iterable[str]) -> None:
    """Delete the user's media (idempotent: media already gone is fine)."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(media_id: str) -> None:
        async with gate:
            try:
                await media.delete_media(user_id, media_id)
            except NotFound:
                pass

    await asyncio.gather(*(one(i) for i in dict.fromkeys(media_ids)))
