"""Every request this worker sends to a provider with limits holds a place in the model's
budget, as the provider counts it (parley_common.budgets.providers).

Before each HTTP request (the first, a retry, a tighter trim, a job delivered again after its
worker died) the worker takes the request's window entry: the turn's own for the first (the
orchestrator reserved it; if it slid out of the window while the job waited, it is taken
again), one of its own for each further one, waiting its turn in the model's queue like any
request when the window is full (the client sees `queued`). Once the provider answers (its
first bytes or its error) the entry counts from then. A request that never left (its
connection was refused) is given back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BudgetLimits, ProviderBudget, send_entry
from parley_common.budgets.waiting import BudgetQueue
from parley_common.context.window import THREAD_CHARS, counter_for_model
from parley_common.messaging.replay import ResponseStream
from parley_common.models import ModelRegistry


@dataclass(frozen=True)
class Permit:
    """Leave to send one request: the window entry it is counted under ("" when the model has
    no limits: nothing is counted) and the tokens the entry holds."""

    entry: str
    tokens: int = 0


class ProviderSends:
    def __init__(self, registry: ModelRegistry, budget: ProviderBudget, queue: BudgetQueue) -> None:
        self.registry = registry
        self.budget = budget
        self.queue = queue

    def limits(self, model: str) -> BudgetLimits:
        spec = self.registry.models.get(model)
        if spec is None:
            return BudgetLimits(None, None)
        return BudgetLimits(spec.requests_per_minute, spec.tokens_per_minute)

    async def prompt_tokens(self, job: chat_pb2.ProviderJob) -> int:
        counter = counter_for_model(self.registry, job.model)
        if sum(len(m.content) for m in job.messages) <= THREAD_CHARS:
            return counter.prompt(job.messages)
        return await asyncio.to_thread(counter.prompt, job.messages)

    async def before_send(self, job: chat_pb2.ProviderJob, stream: ResponseStream) -> Permit | None:
        """Leave to send the next request of `job`, once its window entry is held (at once when
        the model has no limits); None when the turn was cancelled while it waited.

        Raises Unavailable (`provider_budget_timeout`) after the longest wait.
        """
        limits = self.limits(job.model)
        if limits.unlimited:
            return Permit("")
        sent = await self.budget.sends(job.model, job.response_id)
        entry = send_entry(job.response_id, sent)
        prompt = await self.prompt_tokens(job)
        # The turn's own entry holds the answer's tokens too; a further request, only its prompt
        # (it is sent because the one before produced no answer).
        tokens = prompt + job.max_output_tokens if sent == 0 else prompt
        if limits.tokens_per_minute is not None:
            tokens = min(tokens, limits.tokens_per_minute)
        admitted = await self.queue.admit(
            stream,
            model=job.model,
            limits=limits,
            response_id=job.response_id,
            user_id=job.user_id,
            tokens=tokens,
            entry=entry,
            sending=True,
        )
        return Permit(entry, tokens) if admitted else None

    async def answered(self, job: chat_pb2.ProviderJob, permit: Permit) -> None:
        """The provider answered the request sent under `permit` (its first bytes, or its error)."""
        if permit.entry:
            await self.budget.answered(job.model, permit.entry, permit.tokens)

    async def unsent(self, job: chat_pb2.ProviderJob, permit: Permit) -> None:
        """The request sent under `permit` never reached the provider."""
        if permit.entry:
            await self.budget.unsent(job.model, job.response_id, permit.entry)


__all__ = ["Permit", "ProviderSends"]
