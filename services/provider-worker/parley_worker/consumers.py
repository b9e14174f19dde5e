"""Runs provider jobs: streams frames to the client, retries or falls back before the first
token, obeys cancels, and publishes the completed (or interrupted) response.

An answer outlives its worker: a job redelivered after its worker died (the broker hands it
back as soon as that worker's connection drops) is taken once the dead worker's lease lapses
(PARLEY_WORKER_LEASE_S, 1.5 s by default, renewed every third of it); when the replay log shows
text already streamed and the model can go on from a partial answer
(ModelRegistry.can_continue), the job continues from that text on the same frame numbers, so
the client sees one answer; otherwise it ends `interrupted` with a retryable `worker_lost`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry import trace
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from parley.v1 import chat_pb2
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.context.window import counter_for_model
from parley_common.errors import ParleyError, Unavailable
from parley_common.messaging.amqp import PoisonMessage
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.dispatch import Dispatch, Turn
from parley_common.messaging.replay import ReplayLog, ResponseStream, decode_rows, is_terminal
from parley_common.models import ModelRegistry
from parley_common.observability.metrics import PROVIDER_ERRORS, QUEUE_WAIT, TOKENS_PER_SECOND, WORKER_TAKEOVERS
from parley_common.observability.telemetry import tracer

from .batching import DeltaBatcher
from .leases import JobLease
from .provider_sends import Permit, ProviderSends
from .providers import Finish, Provider, TextChunk, UsageReport, model_client_key
from .providers.errors import ProviderError
from .resilience import RetryPolicy

log = logging.getLogger(__name__)

SHUTDOWN = "shutdown"


class ProviderJobConsumer:
    def __init__(
        self,
        *,
        providers: dict[str, Provider],
        registry: ModelRegistry,
        replay: ReplayLog,
        cancellations: Cancellations,
        slots: StreamSlots,
        lease: JobLease,
        policy: RetryPolicy,
        coalesce_s: float,
        dispatch: Dispatch,
        sends: ProviderSends,
    ) -> None:
        """The handler of the provider queues this worker serves, and of its control queue
        (bus.Subscriber does the rest)."""
        self.providers = providers
        self.registry = registry
        self.replay = replay
        self.cancellations = cancellations
        self.slots = slots
        self.lease = lease
        self.policy = policy
        self.coalesce_s = coalesce_s
        self.dispatch = dispatch
        # Every request sent to a provider holds a place in its model's budget.
        self.sends = sends
        self.running: dict[str, asyncio.Task[None]] = {}
        self.cancel_reasons: dict[str, str] = {}

    def cancel(self, response_id: str, reason: str) -> bool:
        """Interrupt the stream of one response if this worker is running it."""
        task = self.running.get(response_id)
        if task is None:
            return False
        self.cancel_reasons.setdefault(response_id, reason)
        task.cancel()
        return True

    def cancel_all(self) -> None:
        """Interrupt every running stream (shutdown past its grace period)."""
        for response_id in list(self.running):
            self.cancel(response_id, SHUTDOWN)

    async def on_control(self, command: chat_pb2.CancelResponse, message: AbstractIncomingMessage) -> None:
        """Handler of this worker's control queue (every worker hears every cancel)."""
        if self.cancel(command.response_id, command.reason or "user"):
            log.info("cancelling", extra={"response_id": command.response_id, "reason": command.reason})

    async def __call__(self, job: chat_pb2.ProviderJob, message: AbstractIncomingMessage) -> None:
        # A model served at a base_url of its own has a client of its own.
        provider = self.providers.get(model_client_key(job.provider, job.model)) or self.providers.get(job.provider)
        if provider is None:
            raise PoisonMessage(f"this worker does not serve provider {job.provider!r}")
        task = asyncio.current_task()
        assert task is not None
        self.running[job.response_id] = task
        try:
            await self.handle(job, provider, bool(message.redelivered))
        finally:
            self.running.pop(job.response_id, None)
            self.cancel_reasons.pop(job.response_id, None)

    async def handle(self, job: chat_pb2.ProviderJob, provider: Provider, redelivered: bool) -> None:
        stream = self.dispatch.stream(Turn.of_job(job))

        def reads(pipe: Pipeline) -> None:
            # The replay log (a duplicate of a finished job, or a takeover) and the cancel flag.
            self.replay.queue_read_after(pipe, job.response_id, 0)
            pipe.get(self.cancellations.key(job.response_id))

        # The lease and what the job needs to know, in one round trip.
        acquired, (rows, flag) = await self.lease.try_acquire_reading(job.response_id, job.attempt, reads)
        if not acquired and redelivered:
            # Redelivered after its worker died: wait for that worker's lease to lapse, then
            # read again what it left (it may have written until then).
            acquired = await self.lease.wait_acquire(job.response_id, job.attempt)
            if acquired:
                async with self.replay.redis.pipeline(transaction=False) as pipe:
                    reads(pipe)
                    rows, flag = await pipe.execute()
        if not acquired:
            log.warning("job is being streamed elsewhere; dropping this copy", extra={"response_id": job.response_id})
            return
        async with self.lease.held(job.response_id, job.attempt):
            earlier = decode_rows(rows)
            # The lease makes this worker the stream's only writer from here on.
            stream.continue_after(earlier[-1].seq if earlier else 0)
            if any(is_terminal(e) for e in earlier):
                # Its stream ended, but its worker may have stopped before the completion was
                # confirmed (the broker restarting, the process killed): announced again from
                # the log, since history and the orchestrator take a completion once per response.
                log.info("job already finished; announcing its end again", extra={"response_id": job.response_id})
                model, content, status, finish_reason, usage = ending_of(job, earlier)
                await self.finish(job, [content], usage, status, finish_reason, model=model)
                return
            shown = "".join(e.delta.text for e in earlier if e.WhichOneof("kind") == "delta")
            meta_shown = any(e.WhichOneof("kind") == "meta" for e in earlier)
            if shown:
                # A worker died mid-stream. Text the user saw is never repeated: this worker
                # takes the answer over from there when the model can go on from a partial
                # answer, else it ends the turn.
                if not self.registry.can_continue(job.model):
                    await stream.fail("worker_lost", "the answer was interrupted; send the message again", True)
                    await self.finish(job, [shown], chat_pb2.Usage(), chat_pb2.RESPONSE_STATUS_INTERRUPTED, "error")
                    return
                log.warning(
                    "taking over an answer whose worker was lost",
                    extra={"response_id": job.response_id, "shown_chars": len(shown), "model": job.model},
                )
                WORKER_TAKEOVERS.labels(job.model).inc()
                taken = chat_pb2.ProviderJob()
                taken.CopyFrom(job)
                taken.continue_from = job.continue_from + shown
                job = taken
            reason = flag.decode() if isinstance(flag, bytes) else flag
            if reason:
                if not meta_shown:
                    await stream.emit(meta=self.meta(job))
                await stream.emit(done=chat_pb2.StreamDone(finish_reason="cancelled"))
                await self.finish(job, [shown], chat_pb2.Usage(), chat_pb2.RESPONSE_STATUS_INTERRUPTED, "cancelled")
                return
            if job.continue_from and not self.registry.can_continue(job.model):
                # The API refuses such a continue (continue_unsupported); a job sent anyway ends
                # with the answer as it was.
                await stream.emit(meta=self.meta(job))
                await stream.fail("continue_unsupported", "this model cannot continue an answer; regenerate it", False)
                await self.finish(job, [], chat_pb2.Usage(), chat_pb2.RESPONSE_STATUS_FAILED, "error")
                return
            await self.stream_answer(job, provider, stream, meta_sent=meta_shown, shown=shown)

    def meta(self, job: chat_pb2.ProviderJob) -> chat_pb2.StreamMeta:
        return chat_pb2.StreamMeta(
            model=job.model,
            user_message_id=job.user_message_id,
            fallback_from=job.fallback_from,
            provider=job.provider,
            dropped_messages=job.dropped_messages,
            truncated_messages=job.truncated_messages,
        )

    async def stream_answer(
        self,
        job: chat_pb2.ProviderJob,
        provider: Provider,
        stream: ResponseStream,
        *,
        meta_sent: bool = False,
        shown: str = "",
    ) -> None:
        """Stream the job's answer (the new text only, when it continues `job.continue_from`).
        A takeover: `meta_sent`, the response's meta frame is in its stream already; `shown`,
        the text its stream carries already (the end of `job.continue_from`)."""
        parts: list[str] = []
        usage = chat_pb2.Usage()
        finish_reason = "stop"
        status = chat_pb2.RESPONSE_STATUS_COMPLETED
        retry = 0
        delay = 0.0
        trimmed = False
        batcher = DeltaBatcher(stream, self.coalesce_s)
        first_token_at = time.monotonic()
        if job.created_at_ms:
            QUEUE_WAIT.labels(job.provider).observe(max(0.0, time.time() - job.created_at_ms / 1000))
        permit: Permit | None = None
        answered = False
        while True:
            try:
                if delay:
                    await asyncio.sleep(delay)
                # Each request sent holds its place in the model's budget first, a retry too.
                permit, answered = await self.sends.before_send(job, stream), False
                if permit is None:
                    # Cancelled while it waited for its place: ended like any cancelled turn.
                    self.cancel_reasons.setdefault(job.response_id, "user")
                    raise asyncio.CancelledError
                # The provider call is a span of its own (one per attempt) in the turn's trace.
                with tracer(__name__).start_as_current_span(
                    "provider.stream",
                    kind=trace.SpanKind.CLIENT,
                    attributes={"parley.provider": job.provider, "parley.model": job.upstream_model},
                ):
                    # aclosing: whatever ends the loop (an error, a cancel) closes the upstream connection now.
                    async with contextlib.aclosing(provider.stream(job)) as chunks:
                        async for chunk in chunks:
                            if not answered:
                                # The provider has the request: it counts from now.
                                await self.sends.answered(job, permit)
                                answered = True
                            if not meta_sent:
                                # The provider accepted the request: now the model is known for sure.
                                if isinstance(chunk, TextChunk) and chunk.text:
                                    batcher.lead(meta=self.meta(job))  # in one write with this text
                                else:
                                    await stream.emit(meta=self.meta(job))
                                meta_sent = True
                            if isinstance(chunk, TextChunk):
                                if chunk.text:
                                    if not parts:
                                        first_token_at = time.monotonic()
                                    parts.append(chunk.text)
                                    await batcher.add(chunk.text)
                            elif isinstance(chunk, UsageReport):
                                usage = self.usage(job.model, chunk)
                            elif isinstance(chunk, Finish):
                                finish_reason = chunk.reason
                if not meta_sent:
                    batcher.lead(meta=self.meta(job))
                # The text still held, usage and done: one write.
                await batcher.close({"usage": usage}, {"done": chat_pb2.StreamDone(finish_reason=finish_reason)})
                elapsed = time.monotonic() - first_token_at
                if parts and usage.output_tokens > 1 and elapsed > 0:
                    TOKENS_PER_SECOND.labels(job.model).observe(usage.output_tokens / elapsed)
                break
            except ProviderError as err:
                # Text already taken from the provider reaches the client before anything else.
                await batcher.close()
                if permit is not None and not err.reached_provider:
                    await self.sends.unsent(job, permit)
                elif permit is not None and not answered:
                    await self.sends.answered(job, permit)
                PROVIDER_ERRORS.labels(job.provider, err.kind).inc()
                extra = {"response_id": job.response_id, "kind": err.kind, "status": err.status, "model": job.model}
                if parts:
                    log.warning("provider failed mid-stream", extra=extra)
                    await stream.fail(err.client_code, _message(err), True)
                    status, finish_reason = chat_pb2.RESPONSE_STATUS_INTERRUPTED, "error"
                    break
                if err.kind == "context_length_exceeded" and not trimmed:
                    shorter = drop_oldest_half(job)
                    if shorter is not None:
                        # The provider counts differently from our estimate: trim tighter, once.
                        log.info("context too long; retrying with a shorter prompt", extra=extra)
                        job, trimmed, delay = shorter, True, 0.0
                        continue
                if err.kind == "overloaded" and self.can_fall_back(job):
                    # An overloaded provider is better left alone: the next model at once.
                    await self.hand_to_fallback(job, err)
                    return
                backoff = self.policy.backoff_s(retry + 1, err)
                if backoff is not None:
                    retry += 1
                    delay = backoff
                    log.info("retrying provider", extra={**extra, "retry": retry, "delay_s": round(delay, 3)})
                    continue
                if self.policy.falls_back(err) and self.can_fall_back(job):
                    await self.hand_to_fallback(job, err)
                    return
                log.warning("provider failed", extra=extra)
                await stream.fail(err.client_code, _message(err), err.retryable)
                status, finish_reason = chat_pb2.RESPONSE_STATUS_FAILED, "error"
                break
            except asyncio.CancelledError:
                # Cancelled by us (a user's cancel or shutdown): finish the turn cleanly.
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                reason = self.cancel_reasons.get(job.response_id, SHUTDOWN)
                status, finish_reason = chat_pb2.RESPONSE_STATUS_INTERRUPTED, "cancelled"
                await batcher.close()
                # The provider reports usage at the end, which a cancel never reaches.
                usage = await self.used_so_far(job, parts, usage)
                if reason == SHUTDOWN:
                    await stream.fail("worker_shutdown", "the worker stopped; send the message again", True)
                else:
                    if not meta_sent:
                        await stream.emit(meta=self.meta(job))
                    await stream.emit(usage=usage)
                    await stream.emit(done=chat_pb2.StreamDone(finish_reason="cancelled"))
                break
            except ParleyError as err:
                # No place in the provider's budget in time (or ever): nothing more is sent.
                log.warning("no provider budget", extra={"response_id": job.response_id, "code": err.code})
                await batcher.close()
                status = chat_pb2.RESPONSE_STATUS_INTERRUPTED if parts else chat_pb2.RESPONSE_STATUS_FAILED
                finish_reason = "error"
                await stream.fail(err.code, err.message, isinstance(err, Unavailable))
                break
            except Exception as exc:
                log.exception("provider stream failed", extra={"response_id": job.response_id})
                await batcher.close()
                status = chat_pb2.RESPONSE_STATUS_INTERRUPTED if parts else chat_pb2.RESPONSE_STATUS_FAILED
                finish_reason = "error"
                await stream.fail("provider_error", f"the model provider failed: {type(exc).__name__}", True)
                break
        await self.finish(job, [shown, *parts], usage, status, finish_reason)

    def can_fall_back(self, job: chat_pb2.ProviderJob) -> bool:
        """A next model in the job's chain that can take it: one that can go on from the
        partial answer, when the job continues one."""
        return bool(job.fallbacks) and (not job.continue_from or self.registry.can_continue(job.fallbacks[0].model))

    async def hand_to_fallback(self, job: chat_pb2.ProviderJob, err: ProviderError) -> None:
        """Hand the job to the next model of its chain: through the orchestrator, which gives
        back this model's budget reservation, fits the prompt to the next model and waits for
        its provider budget before sending it on (FallbackConsumer)."""
        target = job.fallbacks[0]
        spec = self.registry.models.get(target.model)
        nxt = chat_pb2.ProviderJob()
        nxt.CopyFrom(job)
        nxt.model, nxt.provider, nxt.upstream_model = target.model, target.provider, target.upstream_model
        del nxt.fallbacks[:]
        nxt.fallbacks.extend(job.fallbacks[1:])
        nxt.fallback_from = job.fallback_from or job.model
        nxt.attempt = job.attempt + 1
        if spec is not None:
            nxt.max_output_tokens = min(nxt.max_output_tokens or spec.max_output_tokens, spec.max_output_tokens)
        log.warning(
            "falling back",
            extra={"response_id": job.response_id, "from": job.model, "to": target.model, "kind": err.kind},
        )
        await self.dispatch.hand_to_fallback(nxt)

    async def used_so_far(self, job: chat_pb2.ProviderJob, parts: list[str], known: chat_pb2.Usage) -> chat_pb2.Usage:
        """What an answer cut short after its first text used, priced: the prompt's tokens as the
        provider reported them (Anthropic does before the text) or else as Parley counts them
        (what the orchestrator reserved), and the tokens of the text that was shown, as Parley
        counts them unless the provider reported more."""
        spec = self.registry.models.get(job.model)
        if spec is None or not parts:
            return known
        counter = counter_for_model(self.registry, job.model)
        shown = "".join(parts)

        def count() -> tuple[int, int]:
            input_tokens = known.input_tokens or counter.prompt(job.messages)
            return input_tokens, max(known.output_tokens, counter.text(shown))

        # In a thread: a long prompt takes a while, and so does the first use of an encoding.
        input_tokens, output_tokens = await asyncio.to_thread(count)
        return chat_pb2.Usage(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_micros=spec.cost_micros(input_tokens, output_tokens),
        )

    def usage(self, model: str, report: UsageReport) -> chat_pb2.Usage:
        """Tokens as the provider reported them, priced from the registry."""
        spec = self.registry.models.get(model)
        cost = spec.cost_micros(report.input_tokens, report.output_tokens) if spec else 0
        return chat_pb2.Usage(input_tokens=report.input_tokens, output_tokens=report.output_tokens, cost_micros=cost)

    async def finish(
        self,
        job: chat_pb2.ProviderJob,
        parts: list[str],
        usage: chat_pb2.Usage,
        status: chat_pb2.ResponseStatus.ValueType,
        finish_reason: str,
        *,
        model: str = "",
    ) -> None:
        """Publish the response's final state (history persists it) and free the user's slot.
        The content is the text of this response's stream, all of it (for a continuation, the
        new text: history appends it to the message continued); a response that failed after
        its stream carried text (a takeover whose provider then failed) is `interrupted`. `model`:
        the model that answered, when not the job's."""
        content = "".join(parts)
        if content and status == chat_pb2.RESPONSE_STATUS_FAILED:
            status = chat_pb2.RESPONSE_STATUS_INTERRUPTED
        await self.dispatch.completed(Turn.of_job(job), model or job.model, content, status, finish_reason, usage)

        def release_slot(pipe: Pipeline) -> None:
            self.slots.queue_release(pipe, job.user_id, job.response_id)

        # With the lease's release, in one round trip as the job ends.
        if self.lease.release_with(job.response_id, job.attempt, release_slot):
            return
        try:
            await self.slots.release(job.user_id, job.response_id)
        except RedisError as exc:
            # The slot expires by itself; the answer is what matters and it is safe.
            log.warning("could not free the stream slot", extra={"response_id": job.response_id, "error": str(exc)})


def ending_of(
    job: chat_pb2.ProviderJob, frames: list[chat_pb2.StreamEvent]
) -> tuple[str, str, chat_pb2.ResponseStatus.ValueType, str, chat_pb2.Usage]:
    """What `finish` published for a stream that ended with `frames` (its terminal frame
    last): the model that answered, the text, the status, the finish reason and the usage
    its stream carried (an error's usage is not in the stream: the orchestrator estimates it)."""
    model, usage, parts = job.model, chat_pb2.Usage(), []
    for frame in frames:
        kind = frame.WhichOneof("kind")
        if kind == "meta" and frame.meta.model:
            model = frame.meta.model
        elif kind == "delta":
            parts.append(frame.delta.text)
        elif kind == "usage":
            usage = frame.usage
    content = "".join(parts)
    end = next(f for f in frames if is_terminal(f))
    if end.WhichOneof("kind") == "done":
        reason = end.done.finish_reason
        status = chat_pb2.RESPONSE_STATUS_INTERRUPTED if reason == "cancelled" else chat_pb2.RESPONSE_STATUS_COMPLETED
        return model, content, status, reason, usage
    if end.error.code == "worker_shutdown":
        # `finish` after a shutdown: interrupted, "cancelled", with text or without.
        return model, content, chat_pb2.RESPONSE_STATUS_INTERRUPTED, "cancelled", usage
    status = chat_pb2.RESPONSE_STATUS_INTERRUPTED if content else chat_pb2.RESPONSE_STATUS_FAILED
    return model, content, status, "error", usage


def drop_oldest_half(job: chat_pb2.ProviderJob) -> chat_pb2.ProviderJob | None:
    """The job with the older half of its conversation dropped (system prompt and the newest
    message kept), or None when there is nothing left to drop."""
    messages = list(job.messages)
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    if len(rest) <= 1:
        return None
    keep = rest[len(rest) // 2 :]
    # A conversation sent to a model starts with the user's turn.
    while len(keep) > 1 and keep[0].role != "user":
        keep = keep[1:]
    shorter = chat_pb2.ProviderJob()
    shorter.CopyFrom(job)
    del shorter.messages[:]
    shorter.messages.extend(system + keep)
    return shorter


def _message(err: ProviderError) -> str:
    # The provider's own message may carry request details; the client gets a plain sentence.
    return {
        "rate_limited": "the model provider is rate limiting; try again shortly",
        "overloaded": "the model provider is overloaded; try again shortly",
        "server_error": "the model provider failed",
        "bad_response": "the model provider sent an answer Parley cannot read",
        "context_length_exceeded": "the conversation is too long for this model",
        "bad_request": "the model provider rejected the request",
        "auth": "the model provider rejected Parley's credentials",
        "timeout": "the model provider did not answer in time",
        "connection": "the model provider could not be reached",
    }.get(err.kind, "the model provider failed")
