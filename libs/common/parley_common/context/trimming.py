"""Fitting a prompt into a model's context window.

The leading system prompt is always kept. Then messages are added newest first while they
fit; the first one that does not fit ends the prompt (older ones are dropped with it, so the
model never sees a conversation with a hole in it). A newest message too long on its own is
cut to fit, its start and end kept around a marker. An assistant message that trimming left
first (the answer to a dropped question; some providers refuse a prompt that starts so) is
dropped as well.

`fit_context` is a pure function of the messages, the counter and the budget, so a caller
that learns the provider counts differently ("context too long") can call it again with a
tighter budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.context.tokens import REPLY_PRIMING, TokenCounter
from parley_common.errors import InvalidRequest

MARKER = "\n\n[… {cut} tokens cut here to fit the context window …]\n\n"
IMAGES_REMOVED = "[{count} image(s) removed to fit the context window]\n\n"
_MAX_ROUNDS = 32


class ContextTooSmall(InvalidRequest):
    code = "context_window_too_small"


@dataclass(frozen=True)
class ContextFit:
    messages: list[chat_pb2.PromptMessage]
    input_tokens: int  # of `messages`, as the counter bills them
    dropped_messages: int  # older messages left out
    truncated_messages: int  # messages cut short (0 or 1: only the newest is ever cut)


def fit_context(messages: Sequence[chat_pb2.PromptMessage], counter: TokenCounter, max_input_tokens: int) -> ContextFit:
    """The longest recent part of `messages` whose prompt costs at most `max_input_tokens`.

    Raises ContextTooSmall when not even the system prompt and a cut-down newest message fit.
    """
    split = 0
    while split < len(messages) and messages[split].role == "system":
        split += 1
    system, rest = list(messages[:split]), list(messages[split:])
    used = REPLY_PRIMING + sum(counter.message(m) for m in system)
    if used > max_input_tokens:
        raise ContextTooSmall(f"the system prompt alone is longer than the {max_input_tokens}-token budget")
    kept: list[chat_pb2.PromptMessage] = []
    costs: list[int] = []
    truncated = 0
    for message in reversed(rest):
        cost = counter.message(message)
        if used + cost <= max_input_tokens:
            kept.append(message)
            costs.append(cost)
            used += cost
            continue
        if not kept:
            cut = truncate_message(message, counter, max_input_tokens - used)
            if cut is None:
                raise ContextTooSmall("the message does not fit in the model's context window, even cut short")
            cost = counter.message(cut)
            kept.append(cut)
            costs.append(cost)
            used += cost
            truncated = 1
        break
    kept.reverse()
    costs.reverse()
    # Trimming must not leave the answer to a dropped question first.
    while len(rest) > len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
        used -= costs.pop(0)
    return ContextFit(
        messages=system + kept,
        input_tokens=used,
        dropped_messages=len(rest) - len(kept),
        truncated_messages=truncated,
    )


def truncate_message(
    message: chat_pb2.PromptMessage, counter: TokenCounter, room: int
) -> chat_pb2.PromptMessage | None:
    """The message cut to cost at most `room` tokens (start and end kept, a marker between),
    or None when even an empty one would not fit. Images go first when they alone do not fit."""
    cut = chat_pb2.PromptMessage()
    cut.CopyFrom(message)
    prefix = ""
    if counter.message(chat_pb2.PromptMessage(role=message.role, images=message.images)) >= room:
        prefix = IMAGES_REMOVED.format(count=len(message.images)) if message.images else ""
        del cut.images[:]
    tokens = counter.encode(message.content)
    allowed = len(tokens)
    for _ in range(_MAX_ROUNDS):
        if allowed >= len(tokens):
            cut.content = prefix + message.content
        elif allowed <= 0:
            return None
        else:
            head = (allowed + 1) // 2
            tail = allowed - head
            marker = MARKER.format(cut=len(tokens) - allowed)
            end = counter.decode(tokens[len(tokens) - tail :]) if tail else ""
            cut.content = prefix + counter.decode(tokens[:head]) + marker + end
        over = counter.message(cut) - room
        if over <= 0:
            return cut
        step = max(over, 1)
        if allowed >= len(tokens):
            step += counter.text(MARKER.format(cut=len(tokens)))  # the marker comes in from now on
        allowed -= step
    return None


__all__ = ["ContextFit", "ContextTooSmall", "fit_context", "truncate_message"]
