"""What the orchestrator does when an answer completes (ResponseCompleted on <ns>.events).

It consumes its own queue, <ns>.orchestrator.response-completed, bound to `response.completed`:

- the provider budget: when a request of the turn reached the provider, its entry keeps its
  place in the window (the provider counted it) with the tokens the provider reported, or
  its prompt's when it reported none (a 429, cancelled while the provider was slow); an entry
  whose request was never sent (cancelled before the worker called) goes back;
- the user's monthly usage is charged and the turn's hold dropped, in one step (idempotent
  per response); a turn that used nothing just gives its hold back;
- a deterministic request that completed normally (ended "stop" or "length") fills the
  response cache.

When a provider reports no usage (a cancelled stream), the usage is estimated: the prompt's
counted tokens plus the counted tokens of the text that was streamed.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.budgets.users import MonthlyUsage
from parley_common.context.window import counter_for_model
from parley_common.models import ModelRegistry

from .budgets import ProviderBudget
from .job_records import JobRecord, JobRecords
from .response_cache import CachedAnswer, ResponseCache

log = logging.getLogger(__name__)

# Only an answer the model ended itself is the answer to its prompt: not one it stopped for a
# safety block or a refusal ("content_filter"), nor for a reason that is no clean end ("other").
CACHEABLE_FINISH_REASONS = frozenset({"stop", "length"})


class CompletionSettler:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        records: JobRecords,
        budget: ProviderBudget,
        usage: MonthlyUsage,
        cache: ResponseCache,
    ) -> None:
        """The handler of the orchestrator's completions queue (bus.Subscriber does the rest:
        a completion that cannot be settled, Redis down, is tried again a few times, then
        dead-lettered; its reservation then simply slides out of the budget's window)."""
        self.registry = registry
        self.records = records
        self.budget = budget
        self.usage = usage
        self.cache = cache

    async def __call__(self, event: chat_pb2.ResponseCompleted, message: AbstractIncomingMessage) -> None:
        await self.settle(event)

    async def settle(self, event: chat_pb2.ResponseCompleted) -> None:
        """Reconcile the budget, charge the user, fill the cache; safe to repeat."""
        record = await self.records.get(event.response_id)
        tokens, cost = self.usage_of(event, record)
        if record is not None and record.reserved:
            await self.budget.settle(record.model, event.response_id, tokens or record.prompt_tokens)
        if tokens > 0 or cost > 0:
            await self.usage.charge(event.response_id, event.user_id, tokens, cost)
        else:
            await self.usage.release(event.user_id, event.response_id)
        if (
            record is not None
            and record.cache_key
            and self.cache.enabled
            and event.status == chat_pb2.RESPONSE_STATUS_COMPLETED
            and (event.finish_reason or "stop") in CACHEABLE_FINISH_REASONS
            and event.model == record.model
            and event.content
        ):
            await self.cache.put(
                record.cache_key,
                CachedAnswer(model=event.model, content=event.content, finish_reason=event.finish_reason or "stop"),
            )
        if record is not None:
            await self.records.delete(event.response_id)

    def usage_of(self, event: chat_pb2.ResponseCompleted, record: JobRecord | None) -> tuple[int, int]:
        """(tokens, cost in micro-dollars) the answer used: as reported, else estimated."""
        reported = event.usage.input_tokens + event.usage.output_tokens
        if reported > 0 or event.usage.cost_micros > 0:
            return reported, int(event.usage.cost_micros)
        if record is None or not event.content or event.model not in self.registry.models:
            return 0, 0
        output = counter_for_model(self.registry, event.model).text(event.content)
        spec = self.registry.models[event.model]
        return record.prompt_tokens + output, spec.cost_micros(record.prompt_tokens, output)


__all__ = ["CompletionSettler"]
