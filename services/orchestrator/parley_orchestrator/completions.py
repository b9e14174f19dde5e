"""What the orchestrator does when an answer completes (ResponseCompleted on <ns>.events).

It consumes its own queue, <ns>.orchestrator.response-completed, bound to `response.completed`:

- the provider budget: when a request of the turn reached the provider, its entry keeps its
  place in the window (the provider counted it) with the tokens the provider reported, or
  its prompt's when it reported none (a 429, cancelled while the provider was slow); an entry
  whose request was never sent (cancelled before the worker called) goes back;
- the user's monthly usage is charged and the turn's hold dropped, in one step (idempotent
  per response) that also reads the job record and deletes it when nothing below needs it;
  a turn that used nothing just gives its hold back;
- a deterministic request that completed normally (ended "stop" or "length") fills the
  response cache.

When a provider reports no usage (a cancelled stream), the usage is estimated: the prompt's
counted tokens plus the counted tokens of the text that was streamed.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.budgets.providers import ProviderBudget
from parley_common.budgets.users import MonthlyUsage
from parley_common.context.window import counter_for_model
from parley_common.models import ModelRegistry

from .job_records import NEEDED_AFTER_CHARGE, JobRecord, JobRecords
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
        """Charge the user, reconcile the budget, fill the cache; safe to repeat.

        Usually one Redis step: the charge (or the hold given back) reads the job record and
        deletes it, unless a provider reservation or a cache fill still needs it."""
        record: JobRecord | None = None
        if not reported(event) and event.content:
            # The usage is estimated from the record's prompt tokens: read it first.
            record = await self.records.get(event.user_id, event.response_id)
        tokens, cost = self.usage_of(event, record)
        _, raw = await self.usage.settle(
            event.response_id,
            event.user_id,
            tokens,
            cost,
            self.records.key(event.user_id, event.response_id),
            NEEDED_AFTER_CHARGE,
        )
        record = JobRecord.parse(raw)
        if record is not None and record.reserved:
            await self.budget.settle(record.model, event.response_id, tokens or record.prompt_tokens)
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
        if record is not None and (record.reserved or record.cache_key):
            await self.records.delete(event.user_id, event.response_id)

    def usage_of(self, event: chat_pb2.ResponseCompleted, record: JobRecord | None) -> tuple[int, int]:
        """(tokens, cost in micro-dollars) the answer used: as reported, else estimated."""
        if reported(event):
            return event.usage.input_tokens + event.usage.output_tokens, int(event.usage.cost_micros)
        if record is None or not event.content or event.model not in self.registry.models:
            return 0, 0
        output = counter_for_model(self.registry, event.model).text(event.content)
        spec = self.registry.models[event.model]
        return record.prompt_tokens + output, spec.cost_micros(record.prompt_tokens, output)


def reported(event: chat_pb2.ResponseCompleted) -> bool:
    """Whether the provider reported the answer's usage (else it is estimated)."""
    return bool(event.usage.input_tokens + event.usage.output_tokens > 0 or event.usage.cost_micros > 0)


__all__ = ["CompletionSettler"]
