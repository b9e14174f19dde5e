"""Provider jobs handed on along their fallback chain (the first model was overloaded or kept
failing before its first token): a worker sends them here, not straight to the next provider,
so the next model is treated like any first choice.

The first model's budget entry keeps its place with its prompt's tokens when its provider got
the request (the provider counted it; the output reserve goes back), and goes back whole when
it never did; the prompt is fitted to the next model's window, the user's monthly hold becomes
the worst case on the next model, the next model's provider budget is waited for like any
request (the client sees `queued`), the job record names the model that answers (so the
answer's usage is reconciled against that model's budget), then the job goes to its provider.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.budgets.providers import BudgetLimits
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.budgets.waiting import BudgetQueue
from parley_common.context.assembly import ContextSource, assemble_context
from parley_common.errors import InvalidRequest
from parley_common.messaging.dispatch import Dispatch, Turn
from parley_common.messaging.replay import ResponseStream
from parley_common.models import ModelRegistry

from .budgets import hold_worst_case
from .consumers import run_step
from .job_records import JobRecord, JobRecords
from .settings import OrchestratorSettings

log = logging.getLogger(__name__)


class FallbackConsumer:
    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        registry: ModelRegistry,
        budget_queue: BudgetQueue,
        records: JobRecords,
        slots: StreamSlots,
        dispatch: Dispatch,
        user_budgets: UserBudgets | None = None,
    ) -> None:
        """The handler of the fallbacks queue (bus.Subscriber does the rest)."""
        self.user_budgets = user_budgets
        self.settings = settings
        self.registry = registry
        self.budget_queue = budget_queue
        self.records = records
        self.slots = slots
        self.dispatch = dispatch

    async def __call__(self, job: chat_pb2.ProviderJob, message: AbstractIncomingMessage) -> None:
        stream = self.dispatch.stream(Turn.of_job(job))
        await run_step(self.handle(job, stream), stream, self.slots, job.user_id, self.user_budgets)

    async def handle(self, job: chat_pb2.ProviderJob, stream: ResponseStream) -> bool:
        """Budget and fit the job for its (next) model; True once it went to its provider."""
        record = await self.records.get(job.user_id, job.response_id)
        if record is not None and record.reserved and record.model != job.model:
            # The model that failed produced no answer: what its provider counted stays counted.
            await self.budget_queue.budget.settle(record.model, job.response_id, record.prompt_tokens)
        spec = self.registry.models.get(job.model)
        if spec is None:
            raise InvalidRequest(f"unknown fallback model {job.model!r}", code="unknown_model")
        # The first attempt's prompt, as fitted then, fitted again to this model's window.
        plan = await assemble_context(
            self.registry,
            self.settings,
            ContextSource.job(job),
            model=job.model,
            max_output_tokens=job.max_output_tokens,
        )
        await hold_worst_case(self.user_budgets, job.user_id, job.response_id, plan)
        limits = BudgetLimits(spec.requests_per_minute, spec.tokens_per_minute)
        reserved = False
        if not limits.unlimited:
            admitted = await self.budget_queue.admit(
                stream,
                model=job.model,
                limits=limits,
                response_id=job.response_id,
                user_id=job.user_id,
                tokens=plan.reserved_tokens(),
            )
            if not admitted:
                # Cancelled while it waited: an empty answer, stored as interrupted.
                await self.dispatch.end_cancelled(Turn.of_job(job), stream, job.model)
                return False
            reserved = True
        try:
            await self.records.put(job.user_id, job.response_id, JobRecord(job.model, plan.fit.input_tokens, reserved))
            fitted = chat_pb2.ProviderJob()
            fitted.CopyFrom(job)
            del fitted.messages[:]
            fitted.messages.extend(plan.fit.messages)
            fitted.max_output_tokens = plan.max_output_tokens
            fitted.dropped_messages = plan.dropped_messages
            fitted.truncated_messages = plan.truncated_messages
            await self.dispatch.send_job(fitted, idempotency_key=f"{job.response_id}:{job.attempt}")
            return True
        except BaseException:
            if reserved:
                await asyncio.shield(self.budget_queue.budget.release(job.model, job.response_id))
            raise


__all__ = ["FallbackConsumer"]
