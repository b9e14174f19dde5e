"""POST /v1/tokens/count: what a draft message would cost, before it is sent.

The prompt is assembled exactly as the orchestrator will assemble it (the system prompt, the
conversation's latest messages, the draft), routed to the model the orchestrator would pick,
counted with that model's encoding and fitted to its context window.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from parley.v1 import history_pb2, media_pb2
from parley_common.clients.media import MediaClient
from parley_common.context.model_choice import choose_model
from parley_common.context.prompt import build_prompt, collect_context, with_images
from parley_common.context.window import plan_context_async, prompt_token_budget
from parley_common.errors import InvalidRequest, PayloadTooLarge
from parley_common.models import ModelRegistry

from ..auth import current_user
from ..schemas import MAX_MEDIA_PER_MESSAGE, MediaId, Text
from ..settings import GatewaySettings

router = APIRouter(prefix="/v1", tags=["tokens"])


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
    request: Request, user: Annotated[str, Depends(current_user)], body: CountTokens
) -> dict[str, Any]:
    """Input tokens of the assembled context with the draft, the output reserve, and the cost.

    `estimated` is true when the model's own tokenizer is not available offline (the count
    uses the nearest one) or is not public (Anthropic, Gemini). Costs are in micro-dollars:
    `input_cost_micros` for the prompt, `cost_estimate_micros` for the prompt plus the
    longest answer allowed (an upper bound).
    """
    settings: GatewaySettings = request.app.state.turns.settings
    registry: ModelRegistry = request.app.state.registry
    if not body.content.strip():
        raise InvalidRequest("content is empty", code="empty_content")
    if len(body.content) > settings.max_content_chars:
        raise PayloadTooLarge(
            f"content is longer than {settings.max_content_chars} characters", code="content_too_long"
        )
    draft = history_pb2.Message(role="user", content=body.content)
    newest_first = [draft]
    older_unseen = False
    if body.conversation_id is not None:
        history = request.app.state.history
        conversation_id = body.conversation_id
        if settings.prompt_history_messages > 1:
            # The orchestrator's selection: the newest messages until the window less the
            # output reserve is full, at most prompt_history_messages (the draft included).

            async def fetch(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
                page = await history.get_messages(user, conversation_id, before=before, limit=limit)
                return list(page.messages), page.next_cursor

            collected = await collect_context(
                fetch,
                token_budget=prompt_token_budget(
                    registry,
                    body.model or "",
                    requested_max_output=body.max_output_tokens or 0,
                    default_reserve=settings.reserved_output_tokens,
                ),
                max_messages=settings.prompt_history_messages,
                newest=[draft],
            )
            newest_first, older_unseen = collected.newest_first, not collected.complete
        if len(newest_first) == 1:
            await history.get_conversation(user, conversation_id)  # ownership: 404 otherwise
    prompt = build_prompt(settings.system_prompt, newest_first)
    if body.media_ids:
        # The same images the orchestrator would attach (their sizes are what counts); another
        # user's media id is a 404 here as it would be when sending.
        media: MediaClient = request.app.state.media
        images = await media.resolve_images(user, list(body.media_ids), body.image_detail, media_pb2.IMAGE_DELIVERY_URL)
        prompt = with_images(prompt, images)
    model = choose_model(registry, body.model or "", prompt)
    plan = await plan_context_async(
        registry,
        model,
        prompt,
        requested_max_output=body.max_output_tokens or 0,
        default_reserve=settings.reserved_output_tokens,
    )
    input_cost = plan.spec.cost_micros(plan.fit.input_tokens, 0)
    return {
        "model": model,
        "input_tokens": plan.fit.input_tokens,
        "estimated": plan.estimated,
        "max_output_tokens": plan.max_output_tokens,
        "context_window": plan.spec.context_window,
        # Among the messages considered (see the orchestrator), and at least 1 when older ones exist.
        "dropped_messages": plan.fit.dropped_messages or int(older_unseen),
        "truncated": plan.fit.truncated_messages > 0,
        "input_cost_micros": input_cost,
        "cost_estimate_micros": plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens),
    }
