"""POST /v1/tokens/count: what a draft message would cost, before it is sent.

The draft's context is assembled by the orchestrator's own entry point
(parley_common.context.assembly: the conversation read within the same limits, the system
prompt, the draft and its images, the model routing would pick, fitted to its window), so the
count shown is the count of what would be sent.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from parley.v1 import chat_pb2, history_pb2, media_pb2
from parley_common.context.assembly import ContextSource, assemble_context, context_limits
from parley_common.context.prompt import collect_context
from parley_common.errors import InvalidRequest, PayloadTooLarge

from ..deps import RATE_LIMITED, CurrentUser, HistoryDep, MediaDep, RegistryDep, SettingsDep
from ..schemas import MAX_MEDIA_PER_MESSAGE, MediaId, Text

router = APIRouter(prefix="/v1", tags=["tokens"], dependencies=RATE_LIMITED)


class CountTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The conversation the draft would be sent in; none for a new one.
    conversation_id: Text | None = Field(default=None, min_length=1, max_length=128)
    content: Text
    model: Text | None = Field(default=None, max_length=64)
    max_output_tokens: int | None = Field(default=None, ge=1, le=200_000)
    # Images the draft would carry (the user's own media), counted by the model's image rule.
    media_ids: list[MediaId] = Field(default_factory=list, max_length=MAX_MEDIA_PER_MESSAGE)
    image_detail: Literal["high", "low"] = "high"


@router.post("/tokens/count")
async def count_tokens(
    settings: SettingsDep,
    registry: RegistryDep,
    history: HistoryDep,
    media: MediaDep,
    user: CurrentUser,
    body: CountTokens,
) -> dict[str, Any]:
    """Input tokens of the assembled context with the draft, the output reserve, and the cost.

    `estimated` is true when the model's own tokenizer is not available offline (the count
    uses the nearest one) or is not public (Anthropic, Gemini). Costs are in micro-dollars:
    `input_cost_micros` for the prompt, `cost_estimate_micros` for the prompt plus the
    longest answer allowed (an upper bound).
    """
    if not body.content.strip():
        raise InvalidRequest("content is empty", code="empty_content")
    if len(body.content) > settings.max_content_chars:
        raise PayloadTooLarge(
            f"content is longer than {settings.max_content_chars} characters", code="content_too_long"
        )
    draft = history_pb2.Message(role="user", content=body.content)
    source = ContextSource.conversation([draft], complete=True)
    if body.conversation_id is not None:
        conversation_id = body.conversation_id

        async def fetch(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
            page = await history.get_messages(user, conversation_id, before=before, limit=limit)
            return list(page.messages), page.next_cursor

        # What history reads for the orchestrator as the message is appended, the draft first.
        limits = context_limits(
            registry, settings, model=body.model or "", max_output_tokens=body.max_output_tokens or 0
        )
        collected = await collect_context(fetch, limits, newest=[draft])
        if collected.complete and len(collected.newest_first) == 1:
            await history.get_conversation(user, conversation_id)  # ownership: 404 otherwise
        source = ContextSource.conversation(collected.newest_first, complete=collected.complete)
    images: list[chat_pb2.ImagePart] = []
    if body.media_ids:
        # The same images the orchestrator would attach (their sizes are what counts); another
        # user's media id is a 404 here as it would be when sending.
        images = await media.resolve_images(user, list(body.media_ids), body.image_detail, media_pb2.IMAGE_DELIVERY_URL)
    plan = await assemble_context(
        registry,
        settings,
        source,
        model=body.model or "",
        max_output_tokens=body.max_output_tokens or 0,
        images=images,
    )
    input_cost = plan.spec.cost_micros(plan.fit.input_tokens, 0)
    return {
        "model": plan.model,
        "input_tokens": plan.fit.input_tokens,
        "estimated": plan.estimated,
        "max_output_tokens": plan.max_output_tokens,
        "context_window": plan.spec.context_window,
        "dropped_messages": plan.dropped_messages,
        "truncated": plan.truncated_messages > 0,
        "input_cost_micros": input_cost,
        "cost_estimate_micros": plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens),
    }
