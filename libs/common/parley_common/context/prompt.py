"""The prompt a conversation makes: the system prompt, then the stored messages oldest first.

Which stored messages (`collect_context`, within `ContextLimits`) and what of them a prompt
leaves out (`left_out`). parley_common.context.assembly puts these together for every caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from parley.v1 import chat_pb2, history_pb2
from parley_common.context.tokens import NEAREST_SHIPPED, TOKENS_PER_MESSAGE, counter_for
from parley_common.context.window import THREAD_CHARS

DEFAULT_SYSTEM_PROMPT = "You are Parley, a helpful assistant."
# The cap history accepts on a context's message count, whatever the caller asks for.
MAX_CONTEXT_MESSAGES = 2000


def left_out(message: history_pb2.Message) -> bool:
    """A stored message a prompt leaves out: a failed or empty assistant answer."""
    return message.role == "assistant" and (message.status == history_pb2.MESSAGE_STATUS_FAILED or not message.content)


def build_prompt(system_prompt: str, newest_first: Sequence[history_pb2.Message]) -> list[chat_pb2.PromptMessage]:
    """System prompt, then the conversation oldest first.

    Failed assistant answers and empty ones are left out: the model should not see them as
    something it said. Interrupted answers stay, since the user saw them.
    """
    prompt = [chat_pb2.PromptMessage(role="system", content=system_prompt)] if system_prompt else []
    for message in reversed(newest_first):
        if left_out(message):
            continue
        prompt.append(chat_pb2.PromptMessage(role=message.role, content=message.content))
    return prompt


def stored_message_tokens(message: history_pb2.Message) -> int:
    """What a stored message adds to a prompt: its chat-format tokens in cl100k_base, 0 when the
    prompt leaves it out.

    This is the orchestrator's own count of the message (every model is counted with
    cl100k_base, the only encoding shipped; parley_common.context.tokens), images aside: those are
    attached later and only add tokens. So a context collected until these counts reach the
    prompt's budget never holds fewer messages than the fitted prompt can take.
    """
    if left_out(message):
        return 0
    counter = counter_for("openai", NEAREST_SHIPPED)
    return TOKENS_PER_MESSAGE + counter.text(message.role) + counter.text(message.content)


# Pages of stored messages: a small first one (most turns need no more), then large ones.
FIRST_PAGE = 50
NEXT_PAGE = 200

PageFetch = Callable[[str, int], Awaitable[tuple[Sequence[history_pb2.Message], str]]]


@dataclass(frozen=True)
class ContextLimits:
    """How far back a prompt's stored messages are read (the newest first): until their
    stored_message_tokens reach `token_budget` (0 = no budget), at most `max_messages`."""

    token_budget: int
    max_messages: int


@dataclass(frozen=True)
class CollectedContext:
    newest_first: list[history_pb2.Message]
    tokens: int  # stored_message_tokens of them all
    complete: bool  # they reach back to the conversation's first message


def _page_tokens(page: Sequence[history_pb2.Message]) -> list[int]:
    return [stored_message_tokens(m) for m in page]


async def collect_context(
    fetch: PageFetch,
    limits: ContextLimits,
    *,
    newest: Sequence[history_pb2.Message] = (),
) -> CollectedContext:
    """The latest messages, newest first: `newest` (not stored yet, e.g. a draft), then stored
    ones paged backwards with `fetch(before_cursor, limit) -> (page, next_cursor)`, until their
    tokens reach `limits.token_budget` (the message that reaches it included), or
    `limits.max_messages` (at most MAX_CONTEXT_MESSAGES) are held, or the conversation starts.

    The history service (the context AppendMessage returns to the orchestrator), the
    orchestrator (a regenerated or continued answer's path) and the gateway's token count all
    read a conversation with it.
    """
    budget = limits.token_budget
    cap = max(1, min(limits.max_messages or MAX_CONTEXT_MESSAGES, MAX_CONTEXT_MESSAGES))
    held = list(newest)[:cap]
    tokens = sum(_page_tokens(held))
    if len(held) == cap or (budget and tokens >= budget):
        # `newest` alone fills the context: whether it is complete is whether anything is stored.
        page, _ = await fetch("", 1)
        return CollectedContext(held, tokens, complete=not page)
    cursor = ""
    limit = FIRST_PAGE
    while len(held) < cap:
        page, cursor = await fetch(cursor, min(limit, cap - len(held)))
        page = list(page)
        counts = (
            await asyncio.to_thread(_page_tokens, page)
            if sum(len(m.content) for m in page) > THREAD_CHARS
            else _page_tokens(page)
        )
        for index, (message, count) in enumerate(zip(page, counts, strict=True)):
            held.append(message)
            tokens += count
            if budget and tokens >= budget:
                return CollectedContext(held, tokens, complete=not cursor and index == len(page) - 1)
        if not cursor:
            return CollectedContext(held, tokens, complete=True)
        limit = NEXT_PAGE
    return CollectedContext(held, tokens, complete=False)


def with_images(
    messages: Sequence[chat_pb2.PromptMessage], images: Sequence[chat_pb2.ImagePart]
) -> list[chat_pb2.PromptMessage]:
    """The prompt with `images` added to its last user message (a new user message when it has none)."""
    out = list(messages)
    for index in range(len(out) - 1, -1, -1):
        if out[index].role == "user":
            copy = chat_pb2.PromptMessage()
            copy.CopyFrom(out[index])
            copy.images.extend(images)
            out[index] = copy
            return out
    out.append(chat_pb2.PromptMessage(role="user", images=images))
    return out


__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "MAX_CONTEXT_MESSAGES",
    "CollectedContext",
    "ContextLimits",
    "build_prompt",
    "collect_context",
    "left_out",
    "stored_message_tokens",
    "with_images",
]
