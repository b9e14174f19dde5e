"""Consumes ChatRequests: persist the user message, load the conversation, pick the model, fit
the context window, answer from the cache or wait for provider budget, publish a ProviderJob."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from aio_pika.abc import AbstractIncomingMessage

from parley.v1 import chat_pb2, history_pb2
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.budgets.waiting import BudgetQueue
from parley_common.clients.history import HistoryClient
from parley_common.context.assembly import ContextSource, assemble_context, context_limits
from parley_common.context.image_prompts import image_prompt
from parley_common.context.prompt import collect_context
from parley_common.context.window import ContextPlan
from parley_common.errors import InvalidRequest, NotFound, ParleyError, Unavailable
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.dispatch import Dispatch, Turn
from parley_common.messaging.replay import ReplayLog, ResponseStream
from parley_common.messaging.topology import SCHEMA_VERSION, Topology

from .budgets import hold_worst_case_unless_cancelled
from .image_turns import ImageTurns
from .job_records import JobRecord, JobRecords
from .media_refs import MediaRefs
from .response_cache import CachedAnswer, ResponseCache, cache_key, is_deterministic
from .routing import ModelRouter, Route
from .settings import OrchestratorSettings
from .turn_order import TurnOrder

log = logging.getLogger(__name__)


async def replay_stored_answer(stream: ResponseStream, answer: history_pb2.Message, from_char: int = 0) -> None:
    """Stream a stored answer again (from `from_char`: a continuation's own text)."""
    await stream.emit(meta=chat_pb2.StreamMeta(model=answer.model, user_message_id=answer.reply_to_id))
    if answer.content[from_char:]:
        await stream.emit(delta=chat_pb2.StreamDelta(text=answer.content[from_char:]))
    await stream.emit(usage=answer.usage)
    reason = "stop" if answer.status == history_pb2.MESSAGE_STATUS_COMPLETE else "interrupted"
    if answer.status == history_pb2.MESSAGE_STATUS_COMPLETE and answer.finish_reason:
        reason = answer.finish_reason
    await stream.emit(done=chat_pb2.StreamDone(finish_reason=reason))


async def run_step(
    step: Awaitable[bool],
    stream: ResponseStream,
    slots: StreamSlots,
    user_id: str,
    budgets: UserBudgets | None = None,
) -> None:
    """Run one orchestrator step of a turn (`step` is True once a worker has the job). A failure
    ends the client's stream with its code; when no worker will finish the turn, the user's
    stream slot is given back here, and after a failure what the turn held of the user's
    monthly budget (a turn that ended otherwise published its completion, which settles it)."""
    published = failed = False
    try:
        published = await step
    except ParleyError as err:
        # The client learns why its turn ended; the message is done with either way.
        log.warning("request failed", extra={"response_id": stream.response_id, "code": err.code})
        await stream.fail(err.code, err.message, isinstance(err, Unavailable))
        failed = True
    except Exception:
        log.exception("request failed", extra={"response_id": stream.response_id})
        await stream.fail("internal", "the request could not be processed", True)
        failed = True
    if not published:
        await slots.release(user_id, stream.response_id)
    if failed and budgets is not None:
        try:
            await budgets.release(user_id, stream.response_id)
        except Exception as exc:
            # Redis is most likely what failed the turn; the hold expires by itself.
            extra = {"response_id": stream.response_id, "error": str(exc)}
            log.warning("could not give back a budget hold", extra=extra)


class ChatRequestConsumer:
    def __init__(
        self,
        *,
        settings: OrchestratorSettings,
        topology: Topology,
        history: HistoryClient,
        router: ModelRouter,
        replay: ReplayLog,
        turn_order: TurnOrder,
        cancellations: Cancellations,
        slots: StreamSlots,
        budget_queue: BudgetQueue,
        cache: ResponseCache,
        records: JobRecords,
        dispatch: Dispatch,
        media_refs: MediaRefs,
        image_turns: ImageTurns,
        user_budgets: UserBudgets | None = None,
    ) -> None:
        """The handler of the requests queue (bus.Subscriber does the rest)."""
        # Each turn's exact worst case is held in its user's monthly budget (None: no limits).
        self.user_budgets = user_budgets
        self.settings = settings
        self.dispatch = dispatch
        self.topology = topology
        self.history = history
        self.router = router
        self.replay = replay
        self.turn_order = turn_order
        self.cancellations = cancellations
        self.slots = slots
        self.budget_queue = budget_queue
        self.cache = cache
        self.records = records
        self.media_refs = media_refs
        self.image_turns = image_turns

    async def __call__(self, request: chat_pb2.ChatRequest, message: AbstractIncomingMessage) -> None:
        stream = self.dispatch.stream(Turn.of_request(request))
        await run_step(self.handle(request, stream), stream, self.slots, request.user_id, self.user_budgets)

    async def handle(self, request: chat_pb2.ChatRequest, stream: ResponseStream) -> bool:
        """Turn the request into a provider job; True when one was published."""
        # Another user's media id ends the turn here, before anything is stored or sent.
        await self.media_refs.check(request)
        if not request.conversation_id:
            # Stateless (OpenAI-compatible): the prompt is the request's own messages.
            return await self.answer(request, stream, ContextSource.messages(request.inline_messages))
        created_at_ms = request.created_at_ms
        user, cid = request.user_id, request.conversation_id
        taken = await self.turn_order.take_turn(
            user,
            cid,
            request.response_id,
            replace=request.on_busy == "replace",
            on_queued=lambda: stream.emit(queued=chat_pb2.StreamQueued(position=1)),
            # Whether history holds the answer waited for is asked by the append itself, when
            # this turn appends a message (one call, not two, in the usual case).
            check_stored=False,
        )
        if taken.waited:
            # The message takes its place in the transcript after the answer it waited for.
            created_at_ms = int(time.time() * 1000)
        steered = bool(request.regenerate_message_id or request.continue_message_id)
        unchecked = taken.unchecked
        if unchecked and (steered or request.edit_message_id):
            # These read the conversation before they write: the answer must be there first.
            await self.turn_order.until_stored(user, cid, unchecked, taken.deadline)
            unchecked = ""
        if steered:
            return await self.steer(request, stream)
        parent_id: str | None = None
        if request.edit_message_id:
            # A new version of that user message: the same parent, so it is its sibling.
            edited = await self.history.get_message(request.user_id, request.conversation_id, request.edit_message_id)
            if edited.role != "user":
                raise InvalidRequest("only a user message can be edited", code="not_a_user_message")
            parent_id = edited.parent_id
        # The newest messages until the model's window less the output reserve is full (the
        # plan then drops what does not fit), read by history as it appends the message.
        limits = context_limits(
            self.router.registry, self.settings, model=request.model, max_output_tokens=request.max_output_tokens
        )

        async def append(after_stored_id: str) -> history_pb2.AppendMessageResponse:
            return await self.history.append_message(
                user,
                cid,
                request.client_message_id,
                "user",
                request.content,
                created_at_ms,
                context_limit=limits.max_messages,
                context_token_budget=limits.token_budget,
                parent_id=parent_id,
                media_ids=list(request.media_ids),
                after_stored_id=after_stored_id,
            )

        try:
            appended = await append(unchecked)
        except NotFound as exc:
            if not unchecked or exc.code != "answer_not_stored":
                raise
            # The answer before is still on its way to history (stored from the bus a moment
            # after its last frame): nothing was written; wait for it, then append.
            await self.turn_order.until_stored(user, cid, unchecked, taken.deadline)
            appended = await append("")
        if not appended.created and appended.message.content != request.content:
            log.warning(
                "client message id reused with other content; keeping the stored one",
                extra={"response_id": request.response_id},
            )
        context = appended.context
        answered = next((m for m in context if m.id == request.response_id and m.role == "assistant"), None)
        if answered is not None:
            # The same message again, after its stream expired: send the stored answer, not a new one.
            log.info("request already answered; replaying it", extra={"response_id": request.response_id})
            await replay_stored_answer(stream, answered)
            return False
        if (wanted := image_prompt(request.content)) is not None:
            return await self.image_turns.run(request, stream, wanted)
        source = ContextSource.conversation(context, complete=appended.context_complete)
        return await self.answer(request, stream, source)

    async def steer(self, request: chat_pb2.ChatRequest, stream: ResponseStream) -> bool:
        """Regenerate (a new version of an answer) or continue (the same answer goes on): the
        prompt is the path up to the question the answer is for."""
        user, cid = request.user_id, request.conversation_id
        target_id = request.regenerate_message_id or request.continue_message_id
        target = await self.history.get_message(user, cid, target_id)
        if target.role != "assistant":
            raise InvalidRequest("only an answer can be regenerated or continued", code="not_an_answer")
        question_id = target.reply_to_id or target.parent_id
        continue_from = ""
        if request.continue_message_id:
            begun = await self.history.begin_continuation(user, cid, target_id, request.response_id)
            if begun.applied:
                log.info("continuation already stored; replaying it", extra={"response_id": request.response_id})
                await replay_stored_answer(stream, begun.message, begun.base_chars)
                return False
            continue_from = begun.message.content[: begun.base_chars]
        else:
            try:
                done = await self.history.get_message(user, cid, request.response_id)
            except NotFound:
                pass
            else:
                log.info("regeneration already stored; replaying it", extra={"response_id": request.response_id})
                await replay_stored_answer(stream, done)
                return False
        question = await self.history.get_message(user, cid, question_id)
        if question.media_ids and not request.media_ids:
            # The question's own images, as when it was first answered.
            request.media_ids[:] = list(question.media_ids)
            request.image_detail = request.image_detail or "high"

        async def fetch(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
            page = await self.history.get_messages(user, cid, before, limit, leaf_id=question_id)
            return list(page.messages), page.next_cursor

        limits = context_limits(
            self.router.registry, self.settings, model=request.model, max_output_tokens=request.max_output_tokens
        )
        context = await collect_context(fetch, limits)
        return await self.answer(
            request,
            stream,
            ContextSource.conversation(context.newest_first, complete=context.complete),
            continue_from=continue_from,
            # A regenerated answer becomes current: the path is taken back to its question.
            take_path=question_id if request.regenerate_message_id else "",
        )

    async def answer(
        self,
        request: chat_pb2.ChatRequest,
        stream: ResponseStream,
        source: ContextSource,
        *,
        continue_from: str = "",
        take_path: str = "",
    ) -> bool:
        """Assemble the context (the one entry point the gateway's token count uses too), then the
        cache or the provider (after its budget); True when a job was published."""
        plan = await assemble_context(
            self.router.registry,
            self.settings,
            source,
            model=request.model,
            max_output_tokens=request.max_output_tokens,
            images=await self.media_refs.images(request),
        )
        route = self.router.route(plan.model)
        if plan.dropped_messages or plan.truncated_messages:
            log.info(
                "context trimmed to the window",
                extra={
                    "response_id": request.response_id,
                    "model": route.model,
                    "dropped": plan.dropped_messages,
                    "truncated": plan.truncated_messages,
                },
            )
        digest = ""
        if self.cache.enabled and not continue_from and is_deterministic(request, route.spec):
            digest = cache_key(route.model, route.spec.upstream_model, plan.max_output_tokens, plan.fit.messages)
            # The turn's cancellation flag in the same round trip: a cancelled turn gets no answer.
            flag, cached = await self.cache.get_unless(self.cancellations.key(request.response_id), digest)
            if flag is not None:
                await self.dispatch.end_cancelled(Turn.of_request(request), stream, route.model)
                return False
            if cached is not None:
                log.info("answered from the cache", extra={"response_id": request.response_id, "model": route.model})
                if take_path:
                    await self.history.set_current(request.user_id, request.conversation_id, take_path, exact=True)
                await self.serve_cached(request, stream, cached, plan)
                return False
        # Before any wait for the provider: a turn the user's budget cannot cover ends now. The
        # same round trip reads the cancellation flag and writes the job record (`reserved` ahead
        # of the reservation: settling one never taken changes nothing).
        record = JobRecord(route.model, plan.fit.input_tokens, not route.limits.unlimited, digest)
        cancelled, recorded = await hold_worst_case_unless_cancelled(
            self.user_budgets,
            self.cancellations,
            request.user_id,
            request.response_id,
            plan,
            self.records.record_for(request.user_id, request.response_id, record),
        )
        if cancelled:
            await self.dispatch.end_cancelled(Turn.of_request(request), stream, route.model)
            return False
        reserved = False
        if not route.limits.unlimited:
            admitted = await self.budget_queue.admit(
                stream,
                model=route.model,
                limits=route.limits,
                response_id=request.response_id,
                user_id=request.user_id,
                tokens=plan.reserved_tokens(),
            )
            if not admitted:
                await self.dispatch.end_cancelled(Turn.of_request(request), stream, route.model)
                return False
            reserved = True
        try:
            if take_path:
                await self.history.set_current(request.user_id, request.conversation_id, take_path, exact=True)
            if not recorded:
                await self.records.put(request.user_id, request.response_id, record)
            return await self.publish_job(request, route, plan, continue_from)
        except BaseException:
            if reserved:
                # Nothing reached the provider: the reservation goes back at once.
                await asyncio.shield(self.budget_queue.budget.release(route.model, request.response_id))
            raise

    async def serve_cached(
        self, request: chat_pb2.ChatRequest, stream: ResponseStream, cached: CachedAnswer, plan: ContextPlan
    ) -> None:
        """Stream a cached answer like a fresh one, at no cost, and record it like the worker would."""
        await stream.emit(
            meta=chat_pb2.StreamMeta(
                model=cached.model,
                user_message_id=request.client_message_id,
                dropped_messages=plan.dropped_messages,
                truncated_messages=plan.truncated_messages,
                cached=True,
            )
        )
        await stream.emit(delta=chat_pb2.StreamDelta(text=cached.content))
        await stream.emit(usage=chat_pb2.Usage())
        await stream.emit(done=chat_pb2.StreamDone(finish_reason=cached.finish_reason))
        await self.dispatch.completed(
            Turn.of_request(request),
            cached.model,
            cached.content,
            chat_pb2.RESPONSE_STATUS_COMPLETED,
            cached.finish_reason,
        )

    async def publish_job(
        self, request: chat_pb2.ChatRequest, route: Route, plan: ContextPlan, continue_from: str = ""
    ) -> bool:
        job = chat_pb2.ProviderJob(
            version=SCHEMA_VERSION,
            response_id=request.response_id,
            user_id=request.user_id,
            conversation_id=request.conversation_id,
            user_message_id=request.client_message_id,
            model=route.model,
            provider=route.spec.provider,
            upstream_model=route.spec.upstream_model,
            messages=plan.fit.messages,
            max_output_tokens=plan.max_output_tokens,
            # The user's choice only (0 included): the worker adds the registry's default for the
            # model that answers, which a fallback may change.
            temperature=request.temperature,
            has_temperature=request.has_temperature,
            reply_to=request.reply_to,
            created_at_ms=int(time.time() * 1000),
            fallbacks=route.fallbacks,
            dropped_messages=plan.dropped_messages,
            truncated_messages=plan.truncated_messages,
            continue_from=continue_from,
        )
        await self.dispatch.send_job(job, idempotency_key=request.response_id)
        return True
