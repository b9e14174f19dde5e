"""Media a chat request references (`ChatRequest.media_ids`): checked before anything of the
turn is stored, then resolved through the media service into the images of the prompt.

The images go on the prompt's last user message, the one that referenced them; providers
get the compressed derivative ("high": at most 2048 px, or "low"), never an original. A media
id that is not the user's own is a 404-style error (media_not_found) before anything is
stored or sent.
"""

from __future__ import annotations

from typing import Literal

from parley.v1 import chat_pb2, media_pb2
from parley_common.clients.media import MediaClient

_DELIVERY = {"inline": media_pb2.IMAGE_DELIVERY_INLINE, "url": media_pb2.IMAGE_DELIVERY_URL}


class MediaRefs:
    def __init__(self, media: MediaClient, delivery: Literal["inline", "url"] = "inline") -> None:
        self.media = media
        self.delivery = _DELIVERY[delivery]

    async def check(self, request: chat_pb2.ChatRequest) -> None:
        """NotFound (media_not_found) unless every referenced id is media of the request's user."""
        if request.media_ids:
            await self.media.check_media(request.user_id, list(request.media_ids))

    async def images(self, request: chat_pb2.ChatRequest) -> list[chat_pb2.ImagePart]:
        """The request's images, for its prompt's last user message (context.assembly puts them there)."""
        if not request.media_ids:
            return []
        return await self.media.resolve_images(
            request.user_id, list(request.media_ids), request.image_detail or "high", self.delivery
        )
