"""Provider jobs handed on along their fallback chain (the first model was overloaded or kept
failing before its first token): a worker sends them here, not straight to the next provider,
so the next model is treated like any first choice.

The first model's budget reservation is given back (its provider produced nothing), the prompt
is fitted to the next model's window, the next model's provider budget is waited for like any
request (the client sees `queued`), the job record names the model that answers (so the
answer's usage is reconciled against that model's budget), then the job goes to its provider.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.amqp import PoisonMessage, open_envelope
from parley_common.context import plan_context_async
from parley_common.errors import InvalidRequest
from parley_common.replay import ResponseStream
from parley_common.telemetry import consumer_span
from parley_common.topology import PROVIDER_JOB

from .budgets import BudgetLimits
from .consumers import ChatRequestConsumer, run_step
from .job_records import JobRecord
from .routing import Route

log = logging.getLogger(__name__)


class FallbackConsumer:
    def __init__(self, requests: ChatRequestConsumer) -> None:
        """`requests`: the chat request consumer of this process, whose budgets, job records,
        stream slots, channels and dead-letter queue a fallback shares."""
        self.requests = requests
        self.dead_letters = requests.dead_letters
        self.settings = requests.settings
        self.topology = requests.topology
        self.registry = requests.router.registry
        self.budget_queue = requests.budget_queue
        self.records = requests.records
        self.slots = requests.slots
        self.in_flight = requests.in_flight

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with (
            self.in_flight,
            consumer_span(__name__, "orchestrator.fallback", message.headers),
        ):
            try:
                job = open_envelope(message, chat_pb2.ProviderJob, PROVIDER_JOB)
            except PoisonMessage as exc:
                await self.dead_letters.bury(message, self.topology.fallbacks_queue, str(exc))
                return
            stream = ResponseStream(
                channel=self.requests.reply_channel,
                replay=self.requests.replay,
                response_id=job.response_id,
                conversation_id=job.conversation_id,
                reply_to=job.reply_to,
            )
            await run_step(self.handle(job, stream), stream, self.slots, job.user_id)
            await message.ack()

    async def handle(self, job: chat_pb2.ProviderJob, stream: ResponseStream) -> bool:
        """Budget and fit the job for its (next) model; True once it went to its provider."""
        record = await self.records.get(job.response_id)
        if record is not None and record.reserved and record.model != job.model:
            # The model that failed produced nothing: its reservation goes back now.
            await self.budget_queue.budget.release(record.model, job.response_id)
        spec = self.registry.models.get(job.model)
        if spec is None:
            raise InvalidRequest(f"unknown fallback model {job.model!r}", code="unknown_model")
        plan = await plan_context_async(
            self.registry,
            job.model,
            list(job.messages),
            requested_max_output=job.max_output_tokens,
            default_reserve=self.settings.reserved_output_tokens,
        )
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
                await self.requests.end_cancelled(self.as_request(job), stream, Route(job.model, spec, []))
                return False
            reserved = True
        try:
            await self.records.put(job.response_id, JobRecord(job.model, plan.fit.input_tokens, reserved))
            fitted = chat_pb2.ProviderJob()
            fitted.CopyFrom(job)
            del fitted.messages[:]
            fitted.messages.extend(plan.fit.messages)
            fitted.max_output_tokens = plan.max_output_tokens
            fitted.dropped_messages = job.dropped_messages + plan.fit.dropped_messages
            fitted.truncated_messages = job.truncated_messages + plan.fit.truncated_messages
            await self.requests.send_to_provider(fitted, idempotency_key=f"{job.response_id}:{job.attempt}")
            return True
        except BaseException:
            if reserved:
                await asyncio.shield(self.budget_queue.budget.release(job.model, job.response_id))
            raise

    @staticmethod
    def as_request(job: chat_pb2.ProviderJob) -> chat_pb2.ChatRequest:
        """The few fields of the original request that ending the turn needs."""
        return chat_pb2.ChatRequest(
            response_id=job.response_id,
            user_id=job.user_id,
            conversation_id=job.conversation_id,
            client_message_id=job.user_message_id,
            reply_to=job.reply_to,
        )


__all__ = ["FallbackConsumer"]
