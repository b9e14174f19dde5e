"""Chat turns that ask for a picture: drawn by the media service's image generator instead of
answered by a language model.

A message asks for a picture when it starts (any case, after leading spaces) with one of:

    /image <prompt>     /imagine <prompt>     draw <prompt>
    generate|create|make an image|a picture of <prompt>

("draw" alone is the one that can misfire: "draw conclusions from …" asks for a picture too;
"/image" is the unambiguous form for clients to offer.)

The rest of the message is the prompt. The stream gets `meta` (model "images"), an `image`
frame (media id, presigned URL, type, size), a `delta` whose text names the media, `usage`
(zero tokens; `cost_micros` the registry's price of one default-size image, charged against
the user's monthly cost budget with the answer, like a model's usage) and `done`; that text is
the assistant message stored in history, so a client reading history later finds the media id
and fetches fresh URLs with GET /v1/media/{id}. The gateway refused the turn (429
user_budget_exceeded) if the budget could not cover the image, and the turn holds the user's
stream slot until it ends, like any turn.
The response id is the generation's idempotency key: a redelivered request gets the same image.
"""

from __future__ import annotations

import logging

from parley.v1 import chat_pb2
from parley_common.clients.media import MediaClient
from parley_common.errors import ParleyError, RateLimited, Unavailable
from parley_common.messaging.dispatch import Dispatch, Turn
from parley_common.messaging.replay import ResponseStream
from parley_common.models import ImagePricing

log = logging.getLogger(__name__)

IMAGE_MODEL = "images"


def answer_text(prompt: str, image: chat_pb2.StreamImage) -> str:
    short = prompt if len(prompt) <= 200 else prompt[:199] + "…"
    return f'Here is an image of "{short}" ({image.width}x{image.height}, media {image.media_id}).'


class ImageTurns:
    def __init__(self, media: MediaClient, pricing: ImagePricing, dispatch: Dispatch) -> None:
        self.media = media
        self.pricing = pricing
        self.dispatch = dispatch

    async def run(
        self,
        request: chat_pb2.ChatRequest,
        stream: ResponseStream,
        prompt: str,
    ) -> bool:
        """Generate, stream and record the answer. False: no provider job was published."""
        await stream.emit(meta=chat_pb2.StreamMeta(model=IMAGE_MODEL, user_message_id=request.client_message_id))
        try:
            generated = await self.media.generate_image(request.user_id, prompt, idempotency_key=request.response_id)
        except ParleyError as err:
            log.warning("image generation failed", extra={"response_id": request.response_id, "code": err.code})
            await stream.fail(err.code, err.message, isinstance(err, Unavailable | RateLimited))
            await self.dispatch.completed(
                Turn.of_request(request), IMAGE_MODEL, "", chat_pb2.RESPONSE_STATUS_FAILED, "error"
            )
            return False
        high = next((r for r in generated.media.renditions if r.name == "high"), None)
        image = chat_pb2.StreamImage(
            media_id=generated.media.id,
            url=high.url if high else "",
            mime_type=high.mime_type if high else "",
            width=high.width if high else generated.media.width,
            height=high.height if high else generated.media.height,
        )
        text = answer_text(prompt, image)
        await stream.emit(image=image)
        await stream.emit(delta=chat_pb2.StreamDelta(text=text))
        # The image exists: it is charged (the gateway checked the budget could cover it).
        usage = chat_pb2.Usage(cost_micros=self.pricing.cost_micros())
        await stream.emit(usage=usage)
        await stream.emit(done=chat_pb2.StreamDone(finish_reason="stop"))
        await self.dispatch.completed(
            Turn.of_request(request), IMAGE_MODEL, text, chat_pb2.RESPONSE_STATUS_COMPLETED, "stop", usage
        )
        log.info("image turn answered", extra={"response_id": request.response_id, "media_id": image.media_id})
        return False


__all__ = ["IMAGE_MODEL", "ImageTurns", "answer_text"]
