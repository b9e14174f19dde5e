"""A turn's context, assembled in one place: `assemble_context` is what the orchestrator sends
(a first attempt, a regenerated or continued answer, a stateless request, a fallback job) and
what the gateway counts before sending (POST /v1/tokens/count) and holds at admission, so a
count shown to a user cannot drift from what is sent.

1. The conversation's latest stored messages, newest first, read within `context_limits` (the
   chosen model's window less its output reserve, at most PARLEY_PROMPT_HISTORY_MESSAGES
   messages) with prompt.collect_context: by the history service as it appends the user's
   message, or by the caller.
2. The prompt: PARLEY_SYSTEM_PROMPT, then those messages oldest first, less failed and empty
   answers (prompt.build_prompt); the turn's images on its last user message.
3. The model: the one named, else the one routing picks for that prompt (model_choice).
4. The plan: counted with that model's tokenizer and image rule, fitted to its window less the
   output reserve (the client's max_output_tokens, else PARLEY_RESERVED_OUTPUT_TOKENS), with
   what the model does not see of the conversation (window.plan_context).

`PromptSettings` are the prompt's settings, read by the gateway and the orchestrator alike.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from parley.v1 import chat_pb2, history_pb2
from parley_common.context.model_choice import choose_model
from parley_common.context.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    MAX_CONTEXT_MESSAGES,
    ContextLimits,
    build_prompt,
    with_images,
)
from parley_common.context.window import (
    NOTHING_LEFT_OUT,
    THREAD_CHARS,
    ContextPlan,
    LeftOut,
    plan_context,
    prompt_token_budget,
)
from parley_common.models import ModelRegistry
from parley_common.settings import CommonSettings


class PromptSettings(CommonSettings):
    """How a prompt is assembled: read by the orchestrator (what it sends) and the gateway (what
    it counts and holds before sending), from the same variables."""

    # PARLEY_SYSTEM_PROMPT: the first message of every conversation's prompt ("" = none).
    system_prompt: str = Field(default=DEFAULT_SYSTEM_PROMPT, max_length=20_000)
    # PARLEY_PROMPT_HISTORY_MESSAGES: the most stored messages a prompt starts from: the newest
    # ones until the model's context window less the output reserve is full, at most this many
    # (trimming may keep fewer).
    prompt_history_messages: int = Field(default=1000, ge=1, le=MAX_CONTEXT_MESSAGES)
    # PARLEY_RESERVED_OUTPUT_TOKENS: tokens kept free for the answer when the client sets no
    # max_output_tokens (capped at the model's maximum); the prompt gets the rest of the window.
    reserved_output_tokens: int = Field(default=2000, ge=1, le=1_000_000)


@dataclass(frozen=True)
class ContextSource:
    """What a turn's prompt is made of: a conversation's latest stored messages (`stored`,
    newest first; the system prompt goes before them), or a prompt made already (`prompt`: a
    stateless request's own messages, or a fallback job's, fitted for the model before)."""

    stored: Sequence[history_pb2.Message] | None = None
    prompt: Sequence[chat_pb2.PromptMessage] = ()
    left_out: LeftOut = NOTHING_LEFT_OUT

    @classmethod
    def conversation(cls, newest_first: Sequence[history_pb2.Message], *, complete: bool) -> ContextSource:
        """A conversation's latest messages; `complete`: they reach back to its first message."""
        return cls(stored=list(newest_first), left_out=LeftOut(older_unread=not complete))

    @classmethod
    def messages(cls, prompt: Sequence[chat_pb2.PromptMessage]) -> ContextSource:
        """A stateless request's messages, as the client sent them."""
        return cls(prompt=list(prompt))

    @classmethod
    def job(cls, job: chat_pb2.ProviderJob) -> ContextSource:
        """A job's fitted prompt, with what its fit already left out (for its next model)."""
        return cls(
            prompt=list(job.messages), left_out=LeftOut(dropped=job.dropped_messages, truncated=job.truncated_messages)
        )


def context_limits(
    registry: ModelRegistry, settings: PromptSettings, *, model: str, max_output_tokens: int
) -> ContextLimits:
    """How far back a turn reads its conversation (prompt.collect_context): the window of the
    model named (with none, the largest routing may pick) less the output reserve, at most
    PARLEY_PROMPT_HISTORY_MESSAGES messages."""
    budget = prompt_token_budget(
        registry, model, requested_max_output=max_output_tokens, default_reserve=settings.reserved_output_tokens
    )
    return ContextLimits(token_budget=budget, max_messages=settings.prompt_history_messages)


async def assemble_context(
    registry: ModelRegistry,
    settings: PromptSettings,
    source: ContextSource,
    *,
    model: str = "",
    max_output_tokens: int = 0,
    images: Sequence[chat_pb2.ImagePart] = (),
) -> ContextPlan:
    """The context a turn sends: its prompt (the system prompt and `source`, `images` on its
    last user message), the model that answers (`model`, else routing's pick), counted and
    fitted to that model's window less the output reserve (`max_output_tokens`, else the
    configured reserve). Raises InvalidRequest (unknown_model, context_window_too_small).

    Long prompts are counted in a worker thread (tiktoken releases the GIL).
    """
    if source.stored is not None:
        prompt = build_prompt(settings.system_prompt, source.stored)
    else:
        prompt = list(source.prompt)
    if images:
        prompt = with_images(prompt, images)
    plan = functools.partial(
        plan_context,
        registry,
        choose_model(registry, model, prompt),
        prompt,
        requested_max_output=max_output_tokens,
        default_reserve=settings.reserved_output_tokens,
        left_out=source.left_out,
    )
    if sum(len(m.content) for m in prompt) <= THREAD_CHARS:
        return plan()
    return await asyncio.to_thread(plan)


__all__ = ["ContextSource", "PromptSettings", "assemble_context", "context_limits"]
