"""What the orchestrator does when an answer completes (ResponseCompleted on <ns>.events).

It consumes its own queue, <ns>.orchestrator.response-completed, bound to `response.completed`:

- the provider budget: the reservation becomes the tokens the provider reported; a request
  that used nothing (failed, or cancelled before the provider answered) gives it all back;
- the user's monthly usage is charged (idempotent per response);
- a deterministic request that completed normally (ended "stop" or "length") fills the
  response cache.

When a provider reports no usage (a cancelled stream), the usage is estimated: the prompt's
counted tokens plus the counted tokens of the text that was streamed.
"""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from parley.v1 import chat_pb2
from parley_common.amqp import PoisonMessage, open_envelope
from parley_common.context import counter_for_model
from parley_common.dead_letters import DeadLetters
from parley_common.lifecycle import InFlight
from parley_common.models import ModelRegistry
from parley_common.topology import RESPONSE_COMPLETED, RK_RESPONSE_COMPLETED, Topology
from parley_common.user_budgets import MonthlyUsage

from .budgets import ProviderBudget
from .job_records import JobRecord, JobRecords
from .response_cache import CachedAnswer, ResponseCache

log = logging.getLogger(__name__)

# Only an answer the model ended itself is the answer to its prompt: not one it stopped for a
# safety block or a refusal ("content_filter"), nor for a reason that is no clean end ("other").
CACHEABLE_FINISH_REASONS = frozenset({"stop", "length"})

# A completion that cannot be settled (Redis down) is retried this often, this far apart, then
# dead-lettered: its reservation then simply slides out of the budget's window.
MAX_ATTEMPTS = 5
RETRY_DELAY_S = 1.0


def completions_queue_name(topology: Topology) -> str:
    """The orchestrator's own queue of completions (topology.py names the shared ones)."""
    return f"{topology.namespace}.orchestrator.response-completed"


async def declare_completions_queue(topology: Topology, channel: AbstractChannel) -> AbstractQueue:
    exchange = await topology.declare_events_exchange(channel)
    queue = await channel.declare_queue(completions_queue_name(topology), durable=True)
    await queue.bind(exchange, RK_RESPONSE_COMPLETED)
    return queue


class CompletionConsumer:
    def __init__(
        self,
        *,
        registry: ModelRegistry,
        records: JobRecords,
        budget: ProviderBudget,
        usage: MonthlyUsage,
        cache: ResponseCache,
        dead_letters: DeadLetters,
        queue: str,
        in_flight: InFlight,
    ) -> None:
        self.registry = registry
        self.dead_letters = dead_letters
        self.queue = queue
        self.records = records
        self.budget = budget
        self.usage = usage
        self.cache = cache
        self.in_flight = in_flight

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with self.in_flight:
            try:
                event = open_envelope(message, chat_pb2.ResponseCompleted, RESPONSE_COMPLETED)
            except PoisonMessage as exc:
                await self.dead_letters.bury(message, self.queue, str(exc))
                return
            try:
                await self.settle(event)
            except Exception as exc:
                log.exception("could not settle a response, will retry", extra={"response_id": event.response_id})
                await self.dead_letters.retry_later(
                    message, self.queue, f"{type(exc).__name__}: {exc}", MAX_ATTEMPTS, RETRY_DELAY_S
                )
                return
            await message.ack()

    async def settle(self, event: chat_pb2.ResponseCompleted) -> None:
        """Reconcile the budget, charge the user, fill the cache; safe to repeat."""
        record = await self.records.get(event.response_id)
        tokens, cost = self.usage_of(event, record)
        if record is not None and record.reserved:
            if tokens > 0:
                await self.budget.reconcile(record.model, event.response_id, tokens)
            else:
                await self.budget.release(record.model, event.response_id)
        if tokens > 0 or cost > 0:
            await self.usage.charge(event.response_id, event.user_id, tokens, cost)
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


__all__ = ["CompletionConsumer", "declare_completions_queue"]
