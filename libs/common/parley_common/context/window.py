"""The context a model gets: its counter, the room kept for the answer, and the fitted prompt.

The output reserve is the client's max_output_tokens, or `default_reserve` (2,000 tokens unless
configured) when it set none, never more than the model's own maximum. The prompt may use the
rest of the context window. The same reserve is the job's max_output_tokens and is what a
provider budget reserves besides the prompt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.context.tokens import TokenCounter, counter_for
from parley_common.context.trimming import ContextFit, fit_context
from parley_common.errors import InvalidRequest
from parley_common.models import ModelConfig, ModelRegistry

# Prompts longer than this are counted in a worker thread, off the event loop.
THREAD_CHARS = 16_000


@dataclass(frozen=True)
class ContextPlan:
    model: str
    spec: ModelConfig
    counter: TokenCounter
    fit: ContextFit
    max_output_tokens: int

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
    if requested_model:
        names = [requested_model]
    elif registry.routing is not None:
        names = [registry.routing.simple, registry.routing.strong or registry.default_model]
    else:
        names = [registry.default_model]
    specs = [registry.models[n] for n in names if n in registry.models]
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
) -> ContextPlan:
    """Count and fit `messages` for `model`; raises InvalidRequest for an unknown model."""
    spec = registry.models.get(model)
    if spec is None:
        raise InvalidRequest(f"unknown model {model!r}", code="unknown_model")
    counter = counter_for_model(registry, model)
    reserve = output_reserve(spec, requested_max_output, default_reserve)
    fit = fit_context(messages, counter, spec.context_window - reserve)
    return ContextPlan(model=model, spec=spec, counter=counter, fit=fit, max_output_tokens=reserve)


async def plan_context_async(
    registry: ModelRegistry,
    model: str,
    messages: Sequence[chat_pb2.PromptMessage],
    *,
    requested_max_output: int,
    default_reserve: int,
) -> ContextPlan:
    """plan_context, in a thread when the prompt is long (tiktoken releases the GIL)."""
    if sum(len(m.content) for m in messages) <= THREAD_CHARS:
        return plan_context(
            registry, model, messages, requested_max_output=requested_max_output, default_reserve=default_reserve
        )
    return await asyncio.to_thread(
        plan_context,
        registry,
        model,
        messages,
        requested_max_output=requested_max_output,
        default_reserve=default_reserve,
    )


__all__ = [
    "ContextPlan",
    "counter_for_model",
    "output_reserve",
    "plan_context",
    "plan_context_async",
    "prompt_token_budget",
]
