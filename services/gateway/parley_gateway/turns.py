"""Chat turns at the edge: start one (publish a ChatRequest), relay its frames as SSE, resume
it from the replay log, cancel it.

A live turn is read from this gateway's reply queue; a resumed one (or a live one whose
client fell too far behind) from the replay log. Both go through the same relay, which
coalesces deltas, sends heartbeats, enforces an idle timeout, gives a final event on
shutdown, and drops frames the client already has.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from aio_pika.abc import AbstractChannel
from redis.exceptions import RedisError

from parley.v1 import chat_pb2
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.clients.history import HistoryClient
from parley_common.errors import InvalidRequest, NotFound, PayloadTooLarge, RateLimited, Unavailable
from parley_common.messaging.amqp import envelope
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ReplayLog, is_terminal
from parley_common.messaging.topology import CHAT_REQUEST, SCHEMA_VERSION, Topology
from parley_common.observability.metrics import ACTIVE_STREAMS, TIME_TO_FIRST_TOKEN

from .schemas import SendMessage
from .settings import GatewaySettings
from .sse import HEARTBEAT, encode_event, encode_local_error
from .turn_estimates import TurnEstimates

log = logging.getLogger(__name__)


class _Shutdown:
    pass


class _Wake:
    pass


class _LogUnavailable:
    pass


@dataclass(frozen=True)
class _Truncated:
    """Frames after `after_seq` are no longer in the log: the oldest kept is `oldest_seq`."""

    after_seq: int
    oldest_seq: int


class _Ended:
    pass


class _Gone:
    pass


SHUTDOWN: Final = _Shutdown()
# The response ended before the frame a resume started after: the stream closes with nothing more.
ENDED: Final = _Ended()
# The replay log could not be read (Redis down): the relay ends the stream with a notice.
LOG_UNAVAILABLE: Final = _LogUnavailable()
LOG_READ_ATTEMPTS = 5
# The client's connection is gone: the relay ends at once, sending nothing more.
GONE: Final = _Gone()
# Makes a waiting relay look at its feed again (after the broker connection came back).
WAKE: Final = _Wake()
Item: TypeAlias = chat_pb2.StreamEvent | _Shutdown | _Wake | _LogUnavailable | _Truncated | _Ended | _Gone


@dataclass(eq=False)
class Feed:
    """Frames on their way to one client; bounded, so a slow client costs bounded memory."""

    queue: asyncio.Queue[Item]
    # Set when the live queue overflowed: the relay then continues from the replay log.
    lagging: bool = False
    live: bool = True
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # When the turn was accepted (for time to first token).
    created: float = field(default_factory=time.monotonic)


def response_id_for(user_id: str, conversation_id: str, client_message_id: str) -> str:
    """The same message of the same user always maps to the same response."""
    digest = hashlib.sha256(f"{user_id}\x1f{conversation_id}\x1f{client_message_id}".encode()).hexdigest()
    return "r_" + digest[:32]


@dataclass(frozen=True)
class Notice:
    """An event the gateway makes up itself (timeout, shutdown): an `error` with no frame id."""

    response_id: str
    conversation_id: str
    code: str
    message: str
    retryable: bool = True


class Heartbeat:
    pass


HEARTBEAT_ITEM: Final = Heartbeat()
Out: TypeAlias = chat_pb2.StreamEvent | Notice | Heartbeat


class OwnedConversations:
    """Conversations this gateway recently saw to be their user's, so a follow-up message
    skips the ownership call to history. Only ownership is remembered, and a conversation
    never changes owner, so this cannot let one user into another's conversation; a deletion
    on another gateway is seen here within `ttl_s` — until then the orchestrator (whose
    history call checks ownership again) ends the turn with a `conversation_not_found` error
    event instead of this gateway answering 404."""

    def __init__(self, ttl_s: float = 60.0, max_entries: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], float] = {}

    def knows(self, user_id: str, conversation_id: str) -> bool:
        until = self._until.get((user_id, conversation_id))
        return until is not None and until > time.monotonic()

    def remember(self, user_id: str, conversation_id: str) -> None:
        if len(self._until) >= self.max_entries:
            # Oldest first (dicts keep insertion order): drop the older half at once.
            for key in list(self._until)[: self.max_entries // 2]:
                del self._until[key]
        self._until.pop((user_id, conversation_id), None)
        self._until[(user_id, conversation_id)] = time.monotonic() + self.ttl_s

    def forget(self, user_id: str, conversation_id: str) -> None:
        self._until.pop((user_id, conversation_id), None)


@dataclass
class ConnectionSlot:
    """The stream slot one connection holds (see parley_common.budgets.stream_slots)."""

    slots: StreamSlots
    user_id: str
    response_id: str
    connection_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    async def renew(self) -> None:
        await self.slots.renew_connection(self.user_id, self.response_id, self.connection_id)

    async def release(self) -> None:
        await self.slots.release_connection(self.user_id, self.response_id, self.connection_id)


class TurnStream:
    """What a route returns: the response id (known before the first frame), its events, and
    the stream slot of the connection that will carry them."""

    def __init__(
        self,
        response_id: str,
        conversation_id: str,
        events: AsyncIterator[Out],
        slot: ConnectionSlot | None = None,
        feed: Feed | None = None,
    ) -> None:
        self.response_id = response_id
        self.conversation_id = conversation_id
        self.events = self._ending_with_the_answer(events) if slot is not None else events
        self.slot = slot
        self._renewing: _Renewal | None = None
        # Where the events come from, so that a client gone ends them (see `interrupt`).
        self.feed = feed

    def interrupt(self) -> None:
        """The client is gone: the events end at once, without sending anything more (a
        stream without a feed ends when its next write finds the connection closed)."""
        feed = self.feed
        if feed is None:
            return
        while True:
            try:
                feed.queue.put_nowait(GONE)
                return
            except asyncio.QueueFull:
                feed.queue.get_nowait()  # nobody will read those frames

    @property
    def body(self) -> AsyncIterator[bytes]:
        """The events as Server-Sent Events."""
        return _as_sse(self.events)

    async def _ending_with_the_answer(self, events: AsyncIterator[Out]) -> AsyncIterator[Out]:
        """The events; the connection's slot is given back before the answer's last frame is
        sent, so a client that reads it and at once starts another answer finds the slot free."""
        try:
            async for item in events:
                if isinstance(item, chat_pb2.StreamEvent) and is_terminal(item):
                    await self._give_back_slot()
                yield item
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """While its connection is served: keep the connection's stream slot; then, however the
        connection ended (its last frame, the client gone, an error), close the events and give
        the slot back."""
        if self.slot is not None:
            self._renewing = _Renewal(self.slot)
        try:
            yield
        finally:
            try:
                await self.events.aclose()  # type: ignore[attr-defined]
            finally:
                await self._give_back_slot()

    async def _give_back_slot(self) -> None:
        renewing, self._renewing = self._renewing, None
        if renewing is not None:
            await renewing.stop()
        slot, self.slot = self.slot, None
        if slot is None:
            return
        try:
            await slot.release()
        except RedisError as exc:
            # It expires by itself within the connection lease.
            log.warning("could not give back a stream slot", extra={"response_id": slot.response_id, "error": str(exc)})


class _Renewal:
    """Renews a connection's slot every `renew_every_s` until stopped; a failed renewal is tried
    again next time. A timer between renewals, not a task sleeping per open stream: a task
    exists only while a renewal runs."""

    __slots__ = ("running", "slot", "stopped", "timer")

    def __init__(self, slot: ConnectionSlot) -> None:
        self.slot = slot
        self.running: asyncio.Task[None] | None = None
        self.stopped = False
        self.timer = asyncio.get_running_loop().call_later(slot.slots.renew_every_s, self._due)

    def _due(self) -> None:
        if not self.stopped:
            self.running = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        slot = self.slot
        try:
            await slot.renew()
        except RedisError as exc:
            log.warning("could not renew a stream slot", extra={"response_id": slot.response_id, "error": str(exc)})
        finally:
            self.running = None
            if not self.stopped:
                self.timer = asyncio.get_running_loop().call_later(slot.slots.renew_every_s, self._due)

    async def stop(self) -> None:
        self.stopped = True
        self.timer.cancel()
        running = self.running
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def _as_sse(events: AsyncIterator[Out]) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            if isinstance(item, Heartbeat):
                yield HEARTBEAT
            elif isinstance(item, Notice):
                yield encode_local_error(
                    item.response_id, item.conversation_id, item.code, item.message, item.retryable
                )
            else:
                yield encode_event(item)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def too_many_streams(in_use: int) -> RateLimited:
    return RateLimited(
        f"you already have {in_use} streams open or answers being generated, the most at once; wait for one to finish",
        code="too_many_streams",
        headers={"Retry-After": "1"},
    )


class Turns:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        topology: Topology,
        history: HistoryClient,
        replay: ReplayLog,
        slots: StreamSlots,
        cancellations: Cancellations,
        publish_channel: AbstractChannel,
        reply_queue: str,
        user_budgets: UserBudgets | None = None,
        estimates: TurnEstimates | None = None,
    ) -> None:
        self.settings = settings
        # Monthly per-user limits, checked before anything is published (None: no limits).
        self.user_budgets = user_budgets
        # What a turn may cost at most, held in the monthly budget from admission on.
        self.estimates = estimates
        self.topology = topology
        self.history = history
        self.replay = replay
        self.slots = slots
        self.cancellations = cancellations
        self.publish_channel = publish_channel
        self.reply_queue = reply_queue
        self.feeds: set[Feed] = set()
        self.owned = OwnedConversations()
        # Live turns started here, by response id: frames arriving on this gateway's reply
        # queue are handed to them.
        self.live: dict[str, Feed] = {}

    def _new_feed(self) -> Feed:
        return Feed(asyncio.Queue(maxsize=self.settings.live_buffer_frames))

    def on_frame(self, event: chat_pb2.StreamEvent) -> None:
        """Frames of this gateway's reply queue (consumed no-ack through bus.frames: the replay
        log is the durable copy), handed to the live turn they belong to."""
        feed = self.live.get(event.response_id)
        if feed is None or feed.lagging:
            return
        try:
            feed.queue.put_nowait(event)
        except asyncio.QueueFull:
            feed.lagging = True  # the relay picks up from the replay log

    def on_reconnect(self, *_: object) -> None:
        """The broker connection came back: frames sent meanwhile never reached the reply queue,
        so every live stream continues from the replay log (which has them all)."""
        for feed in list(self.live.values()):
            feed.lagging = True
            try:
                feed.queue.put_nowait(WAKE)
            except asyncio.QueueFull:
                pass  # it has frames to read first; it checks `lagging` when they are done

    def shutdown(self) -> None:
        """Give every open stream its final event."""
        for feed in self.feeds:
            for task in feed.tasks:
                task.cancel()
            while True:
                try:
                    feed.queue.put_nowait(SHUTDOWN)
                    break
                except asyncio.QueueFull:
                    feed.queue.get_nowait()

    # starting turns

    async def start(self, user_id: str, conversation_id: str, body: SendMessage) -> TurnStream:
        content = body.content
        if not content.strip():
            raise InvalidRequest("content is empty", code="empty_content")
        if len(content) > self.settings.max_content_chars:
            raise PayloadTooLarge(
                f"content is longer than {self.settings.max_content_chars} characters", code="content_too_long"
            )
        message_id = body.client_message_id or "m_" + uuid.uuid4().hex
        response_id = response_id_for(user_id, conversation_id, message_id)
        # Built before anything is claimed: a request that cannot be encoded leaves nothing behind.
        request = chat_pb2.ChatRequest(
            version=SCHEMA_VERSION,
            response_id=response_id,
            user_id=user_id,
            conversation_id=conversation_id,
            client_message_id=message_id,
            content=content,
            model=body.model or "",
            max_output_tokens=body.max_output_tokens or 0,
            on_busy=body.on_busy,
            media_ids=body.media_ids,
            image_detail=body.image_detail if body.media_ids else "",
        )
        if self.owned.knows(user_id, conversation_id):
            claimed = await self.replay.claim(response_id, user_id, conversation_id)
        else:
            # Both in one round trip's time; the ownership check gives a wrong conversation its 404.
            ownership = asyncio.ensure_future(self.history.get_conversation(user_id, conversation_id))
            try:
                claimed = await self.replay.claim(response_id, user_id, conversation_id)
            except BaseException:
                ownership.cancel()
                raise
            try:
                await ownership
            except BaseException:
                if claimed:
                    await self._release_claim(response_id)
                raise
            self.owned.remember(user_id, conversation_id)
        if not claimed:
            # The client sent this message before: attach to that response instead of a second one.
            return await self.resume_claimed(user_id, response_id, conversation_id, after_seq=0)
        return await self._launch(request)

    async def start_steered(self, request: chat_pb2.ChatRequest) -> TurnStream:
        """A regenerate, edit or continue (routes/versions.py has checked that the conversation
        and the message are the user's): claimed like a send, so the same client_request_id
        attaches to the same response, then admitted and published like one."""
        claimed = await self.replay.claim(request.response_id, request.user_id, request.conversation_id)
        self.owned.remember(request.user_id, request.conversation_id)
        if not claimed:
            return await self.resume_claimed(request.user_id, request.response_id, request.conversation_id, after_seq=0)
        return await self._launch(request)

    async def started(self, user_id: str, response_id: str) -> TurnStream | None:
        """The stream of `response_id` when this user already started it (a request sent again
        attaches to its response before the message it acted on is checked again), else None."""
        record = await self.replay.owner_record(response_id)
        if record is None or record[0] != user_id:
            return None
        return await self.resume_claimed(user_id, response_id, record[1], after_seq=0)

    async def start_stateless(
        self,
        user_id: str,
        messages: list[chat_pb2.PromptMessage],
        *,
        model: str,
        max_output_tokens: int,
        temperature: float | None,
    ) -> TurnStream:
        """A turn whose whole prompt comes with the request (OpenAI-compatible API); no history."""
        response_id = "r_" + uuid.uuid4().hex
        request = chat_pb2.ChatRequest(
            version=SCHEMA_VERSION,
            response_id=response_id,
            user_id=user_id,
            model=model,
            max_output_tokens=max_output_tokens,
            inline_messages=messages,
            temperature=temperature or 0.0,
            has_temperature=temperature is not None,
        )
        await self.replay.claim(response_id, user_id)
        return await self._launch(request)

    async def _release_claim(self, response_id: str) -> None:
        try:
            await self.replay.release(response_id)
        except RedisError as exc:
            # Redis is what failed the request, most likely; the claim expires by itself.
            log.warning("could not release a claim", extra={"response_id": response_id, "error": str(exc)})

    async def _launch(self, request: chat_pb2.ChatRequest) -> TurnStream:
        """Admit and publish a claimed request. Whatever stops it (a limit, Redis, the broker, a
        bug) gives its claim back, so the same message can be sent again at once."""
        try:
            return await self._admit_and_publish(request)
        except BaseException:
            self.live.pop(request.response_id, None)
            await self._release_claim(request.response_id)
            raise

    async def _hold_budget(self, request: chat_pb2.ChatRequest) -> None:
        """Hold the turn's worst case, as far as it is known here, in the user's monthly budget
        (the orchestrator holds the exact one once it has the prompt; the answer's completion
        charges what was used). Over the budget: 429 user_budget_exceeded."""
        if self.user_budgets is None or not self.user_budgets.limited(request.user_id):
            return
        tokens, cost = await self.estimates.worst_case(request) if self.estimates is not None else (0, 0)
        await self.user_budgets.hold(request.user_id, request.response_id, tokens, cost)

    async def _release_budget(self, request: chat_pb2.ChatRequest) -> None:
        if self.user_budgets is None:
            return
        try:
            await self.user_budgets.release(request.user_id, request.response_id)
        except RedisError as exc:
            # The hold expires by itself (user_budgets.HOLD_TTL_S).
            extra = {"response_id": request.response_id, "error": str(exc)}
            log.warning("could not give back a budget hold", extra=extra)

    async def _admit_and_publish(self, request: chat_pb2.ChatRequest) -> TurnStream:
        response_id = request.response_id
        # The connection that will stream the answer rides on the answer's slot.
        connection = ConnectionSlot(self.slots, request.user_id, response_id)
        # The monthly budget and a stream slot, both in one round trip's time. Over the monthly
        # limit: 429 user_budget_exceeded, and nothing reaches the bus.
        slot = asyncio.ensure_future(self.slots.acquire(request.user_id, response_id, connection.connection_id))
        try:
            await self._hold_budget(request)
        except BaseException:
            # Not cancelled: the slot may be taken in Redis already; give it back once known.
            with contextlib.suppress(Exception):
                if await slot < 0:
                    await self.slots.release(request.user_id, response_id)
                    await connection.release()
            raise
        in_use = await slot
        if in_use >= 0 and await self.slots.free_finished(request.user_id, self.replay.finished):
            # Some of those answers had ended, their slots not yet given back: ask once more.
            in_use = await self.slots.acquire(request.user_id, response_id, connection.connection_id)
        if in_use >= 0:
            await self._release_budget(request)
            raise too_many_streams(in_use)
        feed = self._new_feed()
        self.live[response_id] = feed
        request.reply_to = self.reply_queue
        request.created_at_ms = int(time.time() * 1000)
        try:
            await self.publish_channel.default_exchange.publish(
                envelope(request, message_type=CHAT_REQUEST, idempotency_key=response_id),
                routing_key=self.topology.requests_queue,
                mandatory=True,
            )
        except Exception as exc:
            self.live.pop(response_id, None)
            await self.slots.release(request.user_id, response_id)
            await connection.release()
            await self._release_budget(request)
            log.error("could not queue the request", extra={"error": str(exc)})
            raise Unavailable("the chat service is unavailable, try again", code="queue_unavailable") from None
        return TurnStream(
            response_id,
            request.conversation_id,
            self._relay(feed, response_id, request.conversation_id, 0),
            slot=connection,
            feed=feed,
        )

    # resuming and cancelling

    async def resume(self, user_id: str, response_id: str, after_seq: int) -> TurnStream | None:
        """The frames after `after_seq`, then the live tail; None when the response ended at or
        before frame `after_seq` (a client that saw `done` reconnecting): nothing more will come."""
        record = await self.replay.owner_record(response_id)
        if record is None or record[0] != user_id:
            raise NotFound("response not found", code="response_not_found")
        if after_seq and await self.replay.ended_by(response_id, after_seq):
            return None
        # Known before the first frame, so even a notice sent before it names the conversation.
        return await self.resume_claimed(user_id, response_id, record[1], after_seq)

    async def resume_claimed(self, user_id: str, response_id: str, conversation_id: str, after_seq: int) -> TurnStream:
        # Every open stream counts against the user's limit (the first one watching an answer
        # being generated rides on that answer's slot).
        connection = ConnectionSlot(self.slots, user_id, response_id)
        in_use = await self.slots.acquire_connection(user_id, response_id, connection.connection_id)
        if in_use >= 0 and await self.slots.free_finished(user_id, self.replay.finished):
            in_use = await self.slots.acquire_connection(user_id, response_id, connection.connection_id)
        if in_use >= 0:
            raise too_many_streams(in_use)
        feed = self._new_feed()
        feed.live = False
        self._follow_log(feed, response_id, after_seq)
        return TurnStream(
            response_id,
            conversation_id,
            self._relay(feed, response_id, conversation_id, after_seq),
            slot=connection,
            feed=feed,
        )

    def _follow_log(self, feed: Feed, response_id: str, after_seq: int) -> None:
        """Feed frames after `after_seq` from the replay log, then its live tail."""

        async def pump() -> None:
            last = after_seq
            block_ms = int(self.settings.heartbeat_s * 1000)
            for attempt in range(1, LOG_READ_ATTEMPTS + 1):
                try:
                    for event in await self.replay.read_after(response_id, last):
                        if event.seq > last + 1:
                            # Frames are numbered without gaps: the ones between were trimmed (or
                            # never written, while Redis was down).
                            await feed.queue.put(_Truncated(last, event.seq))
                            return
                        await feed.queue.put(event)
                        last = event.seq
                        if is_terminal(event):
                            return
                    async for followed in self.replay.follow(response_id, last, block_ms=block_ms):
                        if followed is None and await self.replay.ended_by(response_id, last):
                            # The response ended at or before the frame the client named (a
                            # Last-Event-ID ahead of the log when it was asked): nothing more comes.
                            await feed.queue.put(ENDED)
                            return
                        if followed is not None and followed.seq > last + 1:
                            await feed.queue.put(_Truncated(last, followed.seq))
                            return
                        if followed is not None and followed.seq > last:
                            await feed.queue.put(followed)
                            last = followed.seq
                            if is_terminal(followed):
                                return
                except RedisError as exc:
                    # A broken pooled connection (Redis restarted) fails once, then reconnects.
                    log.warning("replay log read failed", extra={"response_id": response_id, "error": str(exc)})
                    await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            await feed.queue.put(LOG_UNAVAILABLE)

        feed.tasks.append(asyncio.create_task(pump()))

    async def cancel(self, user_id: str, response_id: str) -> str:
        """Stop generating a response: "cancelling", or "finished" when it had already ended."""
        if await self.replay.owner(response_id) != user_id:
            raise NotFound("response not found", code="response_not_found")
        if await self.replay.finished(response_id):
            return "finished"
        await self.cancellations.request(response_id, user_id, "user")
        return "cancelling"

    # the relay

    async def _relay(self, feed: Feed, response_id: str, conversation_id: str, after_seq: int) -> AsyncIterator[Out]:
        self.feeds.add(feed)
        ACTIVE_STREAMS.inc()
        measure_first_token = feed.live
        model = ""
        last = after_seq
        now = time.monotonic()
        idle_since = now  # last frame from the backend
        quiet_since = now  # last bytes to the client
        pending: chat_pb2.StreamEvent | None = None  # deltas held for coalescing
        flush_at = 0.0
        coalesce_s = self.settings.coalesce_ms / 1000
        sent_delta = False
        try:
            while True:
                if feed.live and feed.lagging and feed.queue.empty():
                    # The client fell behind the live queue: continue from the replay log.
                    feed.live = False
                    self.live.pop(response_id, None)
                    self._follow_log(feed, response_id, pending.seq if pending else last)
                now = time.monotonic()
                wait = self.settings.heartbeat_s - (now - quiet_since)
                if pending is not None:
                    wait = min(wait, flush_at - now)
                try:
                    if feed.queue.empty() or wait <= 0:
                        async with asyncio.timeout(max(wait, 0)):
                            item = await feed.queue.get()
                    else:
                        # A frame is waiting already: no timer to arm and cancel.
                        item = feed.queue.get_nowait()
                except TimeoutError:
                    now = time.monotonic()
                    if pending is not None and now >= flush_at:
                        yield pending
                        last, pending, quiet_since = pending.seq, None, now
                        continue
                    if now - idle_since >= self.settings.stream_idle_timeout_s:
                        if pending is not None:
                            yield pending
                        yield Notice(
                            response_id,
                            conversation_id,
                            "stream_timeout",
                            "no answer from the backend in time; resume or send again",
                        )
                        return
                    if now - quiet_since >= self.settings.heartbeat_s:
                        yield HEARTBEAT_ITEM
                        quiet_since = now
                    continue
                if isinstance(item, _Gone):
                    return
                if isinstance(item, _Wake):
                    continue
                if isinstance(item, _Ended):
                    if pending is not None:
                        yield pending
                    return
                if isinstance(item, _LogUnavailable):
                    if pending is not None:
                        yield pending
                    yield Notice(
                        response_id,
                        conversation_id,
                        "replay_unavailable",
                        "the stream cannot be read right now; resume with Last-Event-ID shortly",
                    )
                    return
                if isinstance(item, _Truncated):
                    if pending is not None:
                        yield pending
                    yield Notice(
                        response_id,
                        conversation_id,
                        "replay_truncated",
                        f"frames {item.after_seq + 1} to {item.oldest_seq - 1} of this response are no longer kept, "
                        f"so it cannot be resumed after frame {item.after_seq}; "
                        "the answer is stored in the conversation's history when it ends",
                        retryable=False,
                    )
                    return
                if isinstance(item, _Shutdown):
                    if pending is not None:
                        yield pending
                    yield Notice(
                        response_id,
                        conversation_id,
                        "gateway_shutdown",
                        "this gateway is restarting; resume with Last-Event-ID",
                    )
                    return
                held = pending.seq if pending is not None else last
                if item.seq <= held:
                    continue  # the client has it already
                if feed.live and item.seq > held + 1:
                    # A frame never reached this gateway's reply queue (frames are unconfirmed:
                    # one published while the broker failed over can be lost). The replay log
                    # has every frame: go on from there, past the live frames already queued.
                    feed.lagging = True
                    continue
                idle_since = time.monotonic()
                kind = item.WhichOneof("kind")
                if kind == "queued":
                    # A queued turn is alive for as long as the queue said it would wait: the
                    # idle timeout counts from then (the queue also refreshes its frame).
                    idle_since += item.queued.estimated_wait_ms / 1000
                conversation_id = conversation_id or item.conversation_id
                if kind == "delta" and sent_delta and coalesce_s > 0:
                    if pending is None:
                        pending = chat_pb2.StreamEvent()
                        pending.CopyFrom(item)
                        flush_at = idle_since + coalesce_s
                    else:
                        pending.delta.text += item.delta.text
                        pending.seq = item.seq
                    if len(pending.delta.text.encode()) >= self.settings.coalesce_max_bytes:
                        yield pending
                        last, pending, quiet_since = pending.seq, None, time.monotonic()
                    continue
                if pending is not None:
                    yield pending
                    last, pending = pending.seq, None
                last = item.seq
                if kind == "meta":
                    model = item.meta.model
                elif kind == "delta" and measure_first_token and not sent_delta:
                    TIME_TO_FIRST_TOKEN.labels(model).observe(time.monotonic() - feed.created)
                sent_delta = sent_delta or kind == "delta"
                yield item
                quiet_since = time.monotonic()
                if is_terminal(item):
                    return
        finally:
            ACTIVE_STREAMS.dec()
            self.feeds.discard(feed)
            if self.live.get(response_id) is feed:
                del self.live[response_id]
            for task in feed.tasks:
                task.cancel()


__all__ = ["TurnStream", "Turns", "response_id_for"]
