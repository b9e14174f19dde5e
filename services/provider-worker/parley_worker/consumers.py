"""Runs provider jobs: streams frames to the client and publishes the completed response."""

from __future__ import annotations

import asyncio
import logging
import time

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from opentelemetry import trace
from redis.exceptions import ResponseError

from parley.v1 import chat_pb2
from parley_common.amqp import PoisonMessage, envelope, open_envelope
from parley_common.lifecycle import InFlight
from parley_common.models import ModelRegistry
from parley_common.replay import ReplayLog, ResponseStream
from parley_common.telemetry import extract_context, tracer
from parley_common.topology import (
    PROVIDER_JOB,
    RESPONSE_COMPLETED,
    RK_RESPONSE_COMPLETED,
    SCHEMA_VERSION,
)

from .providers import Finish, Provider, TextChunk, UsageReport

log = logging.getLogger(__name__)


class ProviderJobConsumer:
    def __init__(
        self,
        *,
        providers: dict[str, Provider],
        registry: ModelRegistry,
        replay: ReplayLog,
        reply_channel: AbstractChannel,
        events_exchange: AbstractExchange,
        in_flight: InFlight,
    ) -> None:
        self.providers = providers
        self.registry = registry
        self.replay = replay
        self.reply_channel = reply_channel
        self.events_exchange = events_exchange
        self.in_flight = in_flight
        self.running: set[asyncio.Task[None]] = set()

    def cancel_all(self) -> None:
        """Interrupt every running stream (shutdown past its grace period)."""
        for task in self.running:
            task.cancel()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        with (
            self.in_flight,
            tracer(__name__).start_as_current_span(
                "worker.run_job", context=extract_context(message.headers), kind=trace.SpanKind.CONSUMER
            ),
        ):
            try:
                job = open_envelope(message, chat_pb2.ProviderJob, PROVIDER_JOB)
                provider = self.providers.get(job.provider)
                if provider is None:
                    raise PoisonMessage(f"this worker does not serve provider {job.provider!r}")
            except PoisonMessage as exc:
                log.error("rejecting poison message", extra={"reason": str(exc), "message_id": message.message_id})
                await message.reject(requeue=False)
                return
            task = asyncio.current_task()
            assert task is not None
            self.running.add(task)
            try:
                await self.run(job, provider)
                await message.ack()
            finally:
                self.running.discard(task)

    async def run(self, job: chat_pb2.ProviderJob, provider: Provider) -> None:
        stream = ResponseStream(
            channel=self.reply_channel,
            replay=self.replay,
            response_id=job.response_id,
            conversation_id=job.conversation_id,
            reply_to=job.reply_to,
        )
        try:
            await stream.emit(meta=chat_pb2.StreamMeta(model=job.model, user_message_id=job.user_message_id))
        except ResponseError as exc:
            # The replay log already starts with frame 1: another delivery of this job ran.
            log.warning(
                "job already started elsewhere; dropping", extra={"response_id": job.response_id, "error": str(exc)}
            )
            return
        parts: list[str] = []
        usage = chat_pb2.Usage()
        finish_reason = "stop"
        status = chat_pb2.RESPONSE_STATUS_COMPLETED
        try:
            async for chunk in provider.stream(job):
                if isinstance(chunk, TextChunk):
                    parts.append(chunk.text)
                    await stream.emit(delta=chat_pb2.StreamDelta(text=chunk.text))
                elif isinstance(chunk, UsageReport):
                    usage = self.usage(job.model, chunk)
                elif isinstance(chunk, Finish):
                    finish_reason = chunk.reason
            await stream.emit(usage=usage)
            await stream.emit(done=chat_pb2.StreamDone(finish_reason=finish_reason))
        except asyncio.CancelledError:
            status = chat_pb2.RESPONSE_STATUS_INTERRUPTED
            finish_reason = "interrupted"
            # Only shutdown cancels a stream; what the user saw is kept and the job is done.
            await stream.fail("worker_shutdown", "the worker stopped; send the message again", True)
        except Exception as exc:
            log.exception("provider stream failed", extra={"response_id": job.response_id})
            status = chat_pb2.RESPONSE_STATUS_INTERRUPTED if parts else chat_pb2.RESPONSE_STATUS_FAILED
            finish_reason = "error"
            await stream.fail("provider_error", f"the model provider failed: {type(exc).__name__}", True)
        await self.publish_completed(job, parts, usage, status, finish_reason)

    def usage(self, model: str, report: UsageReport) -> chat_pb2.Usage:
        """Tokens as the provider reported them, priced from the registry."""
        spec = self.registry.models.get(model)
        cost = spec.cost_micros(report.input_tokens, report.output_tokens) if spec else 0
        return chat_pb2.Usage(input_tokens=report.input_tokens, output_tokens=report.output_tokens, cost_micros=cost)

    async def publish_completed(
        self,
        job: chat_pb2.ProviderJob,
        parts: list[str],
        usage: chat_pb2.Usage,
        status: chat_pb2.ResponseStatus.ValueType,
        finish_reason: str,
    ) -> None:
        completed = chat_pb2.ResponseCompleted(
            version=SCHEMA_VERSION,
            response_id=job.response_id,
            user_id=job.user_id,
            conversation_id=job.conversation_id,
            user_message_id=job.user_message_id,
            model=job.model,
            content="".join(parts),
            status=status,
            usage=usage,
            finish_reason=finish_reason,
            completed_at_ms=int(time.time() * 1000),
        )
        await self.events_exchange.publish(
            envelope(completed, message_type=RESPONSE_COMPLETED, idempotency_key=job.response_id),
            routing_key=RK_RESPONSE_COMPLETED,
            mandatory=True,
        )
