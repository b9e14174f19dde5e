"""POST /v1/images/generations, OpenAI-compatible: an OpenAI SDK's `images.generate` works
against Parley. Each image is stored as the user's media; `url` is a presigned URL of its
"high" rendition, and `media_id` (an extra field) names it for GET /v1/media/{id} and for
`media_ids` in a later message.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from parley.v1 import media_pb2
from parley_common.media_client import MediaClient

from ..auth import current_user
from ..schemas import ImageGeneration

router = APIRouter(prefix="/v1/images", tags=["images"])

User = Annotated[str, Depends(current_user)]


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
async def generate_images(request: Request, user: User, body: ImageGeneration) -> dict[str, Any]:
    media: MediaClient = request.app.state.media
    if request.app.state.user_budgets is not None:
        # A user whose monthly limit is used up gets 429 user_budget_exceeded, like a chat turn.
        await request.app.state.user_budgets.check(user)
    size = "" if body.size == "auto" else body.size
    generated = await asyncio.gather(
        *(
            media.generate_image(user, body.prompt, size, include_data=body.response_format == "b64_json")
            for _ in range(body.n)
        )
    )
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
