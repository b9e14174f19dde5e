"""The context a model gets: its counter, the room kept for the answer, the fitted prompt, and
what the model does not see of the conversation.

The output reserve is the client's max_output_tokens, or `default_reserve` (2,000 tokens unless
configured) when it set none, never more than the model's own maximum. The prompt may use the
rest of the context window. The same reserve is the job's max_output_tokens and is what a
provider budget reserves besides the prompt.

Callers assemble a turn's context with parley_common.context.assembly, which plans it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.context.model_choice import candidate_models
from parley_common.context.tokens import TokenCounter, counter_for
from parley_common.context.trimming import ContextFit, fit_context
from parley_common.errors import InvalidRequest
from parley_common.models import ModelConfig, ModelRegistry

# Prompts longer than this are counted in a worker thread, off the event loop.
THREAD_CHARS = 16_000


@dataclass(frozen=True)
class LeftOut:
    """What a prompt already lacks of its conversation before it is fitted to a model."""

    dropped: int = 0  # messages an earlier fit dropped (a fallback job's, fitted for the model before)
    truncated: int = 0  # messages an earlier fit cut short
    older_unread: bool = False  # the conversation holds messages older than those read for it


NOTHING_LEFT_OUT = LeftOut()


@dataclass(frozen=True)
class ContextPlan:
    model: str
    spec: ModelConfig
    counter: TokenCounter
    fit: ContextFit
    max_output_tokens: int
    # What the model does not see of the conversation, as meta and the token count report it.
    dropped_messages: int
    truncated_messages: int

    @property
    def estimated(self) -> bool:
        return self.counter.estimated

    def reserved_tokens(self) -> int:
        """What the request may cost the provider at most: the prompt and the longest answer."""
        return self.fit.input_tokens + self.max_output_tokens


def output_reserve(spec: ModelConfig, requested_max_output: int, default_reserve: int) -> int:
    return max(1, min(requested_max_output or default_reserve, spec.max_output_tokens, spec.context_window - 64))


def prompt_token_budget(
    registry: ModelRegistry, requested_model: str, *, requested_max_output: int, default_reserve: int
) -> int:
    """Tokens the prompt may use: the model's context window less its output reserve.

    With no model named, the largest among the models routing may pick (it picks after seeing
    the prompt). An unknown model gets 1: the turn fails with unknown_model before any use.
    """
    specs = [registry.models[n] for n in candidate_models(registry, requested_model)]
    budgets = [s.context_window - output_reserve(s, requested_max_output, default_reserve) for s in specs]
    return max(budgets, default=1)


def counter_for_model(registry: ModelRegistry, model: str) -> TokenCounter:
    spec = registry.models[model]
    return counter_for(registry.providers[spec.provider].kind, spec.tokenizer)


def plan_context(
    registry: ModelRegistry,
    model: str,
    messages: Sequence[chat_pb2.PromptMessage],
    *,
    requested_max_output: int,
    default_reserve: int,
    left_out: LeftOut = NOTHING_LEFT_OUT,
) -> ContextPlan:
    """Count and fit `messages` for `model`; raises InvalidRequest for an unknown model.

    What is dropped (the one rule): what `left_out` says was dropped before, plus what this fit
    drops, and at least 1 when older messages were not read at all. Those are not counted one
    by one: a conversation is read until the first message past the window's budget, which
    this fit then drops, so the count is of the messages considered.
    """
    spec = registry.models.get(model)
    if spec is None:
        raise InvalidRequest(f"unknown model {model!r}", code="unknown_model")
    counter = counter_for_model(registry, model)
    reserve = output_reserve(spec, requested_max_output, default_reserve)
    fit = fit_context(messages, counter, spec.context_window - reserve)
    return ContextPlan(
        model=model,
        spec=spec,
        counter=counter,
        fit=fit,
        max_output_tokens=reserve,
        dropped_messages=left_out.dropped + max(fit.dropped_messages, int(left_out.older_unread)),
        truncated_messages=left_out.truncated + fit.truncated_messages,
    )


__all__ = [
    "THREAD_CHARS",
    "ContextPlan",
    "LeftOut",
    "counter_for_model",
    "output_reserve",
    "plan_context",
    "prompt_token_budget",
]
