"""POST /v1/images/generations, OpenAI-compatible: an OpenAI SDK's `images.generate` works
against Parley. Each image is stored as the user's media; `url` is a presigned URL of its
"high" rendition, and `media_id` (an extra field) names it for GET /v1/media/{id} and for
`media_ids` in a later message.

A request holds one of the user's stream slots while its images are drawn, and costs the
registry's price per image of its size (`images` in config/models.yaml): the price of all `n`
is held in the monthly cost budget before anything is drawn (refused when it does not fit, so
generations running at once never overspend it), then each image drawn is charged and the
rest given back. The response has no cost field (OpenAI's has none); the budget headers of the
next response show it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from typing import Any

from fastapi import APIRouter

from parley.v1 import media_pb2

from ..deps import RATE_LIMITED, BudgetsDep, CurrentUser, MediaDep, RegistryDep, SlotsDep
from ..schemas import ImageGeneration
from ..turns.connection_slot import too_many_streams

router = APIRouter(prefix="/v1/images", tags=["images"], dependencies=RATE_LIMITED)


def image_item(generated: media_pb2.GeneratedImage, response_format: str) -> dict[str, Any]:
    high = next((r for r in generated.media.renditions if r.name == "high"), None)
    item: dict[str, Any] = {"media_id": generated.media.id}
    if response_format == "b64_json":
        item["b64_json"] = base64.b64encode(generated.data).decode("ascii")
    else:
        item["url"] = high.url if high is not None else ""
    if generated.revised_prompt:
        item["revised_prompt"] = generated.revised_prompt
    return item


@router.post("/generations")
async def generate_images(
    media: MediaDep,
    registry: RegistryDep,
    budgets: BudgetsDep,
    slots: SlotsDep,
    user: CurrentUser,
    body: ImageGeneration,
) -> dict[str, Any]:
    size = "" if body.size == "auto" else body.size
    price = registry.images.cost_micros(size)
    generation_id = "img_" + uuid.uuid4().hex
    # The request holds one of the user's stream slots while its images are drawn (429
    # too_many_streams past the limit), taken alongside the budget hold: the images' price must
    # fit in what is left of the monthly cost limit (429 user_budget_exceeded, nothing drawn).
    slot = asyncio.ensure_future(slots.acquire(user, generation_id))
    try:
        await budgets.hold(user, generation_id, 0, price * body.n)
    except BaseException:
        with contextlib.suppress(Exception):
            if await slot is None:
                await slots.release(user, generation_id)
        raise
    refused = await slot
    charged = False
    try:
        if refused is not None:
            raise too_many_streams(refused)
        try:
            results = await asyncio.gather(
                *(
                    media.generate_image(user, body.prompt, size, include_data=body.response_format == "b64_json")
                    for _ in range(body.n)
                ),
                return_exceptions=True,
            )
        finally:
            await asyncio.shield(slots.release(user, generation_id))
        generated = [r for r in results if isinstance(r, media_pb2.GeneratedImage)]
        if generated and price:
            # Each image drawn is charged, also when another of the request's images failed (it
            # is stored as the user's media, and a paid generator billed it); the hold goes.
            await asyncio.shield(budgets.usage.charge(generation_id, user, 0, price * len(generated)))
            charged = True
    finally:
        if not charged:
            await asyncio.shield(budgets.release(user, generation_id))
    failed = next((r for r in results if isinstance(r, BaseException)), None)
    if failed is not None:
        raise failed
    first = generated[0].media
    high = next((r for r in first.renditions if r.name == "high"), None)
    answer: dict[str, Any] = {
        "created": int(time.time()),
        "data": [image_item(g, body.response_format) for g in generated],
    }
    if high is not None:
        answer["size"] = f"{high.width}x{high.height}"
        answer["output_format"] = high.mime_type.removeprefix("image/")
    return answer
