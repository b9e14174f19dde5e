"""Starting a turn: a message sent in a conversation, a regenerate / edit / continue
(routes/versions.py), or a stateless OpenAI-compatible request.

In order: the request is checked and built (a request that cannot be encoded leaves nothing
behind); its response is claimed in the replay log (the same message sent again attaches to
that response instead, `Responses.attach`), the conversation's ownership checked alongside
(turns/ownership.py); the user's monthly budget holds the turn's worst case while a stream
slot is taken for the answer and the connection that streams it; then the ChatRequest is
published, with publisher confirms, to the orchestrator. Whatever stops it on the way gives
back what it took. Its frames then come back on this gateway's reply queue (turns/live.py)
through the relay (turns/relay.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import uuid

from aio_pika.abc import AbstractChannel
from redis.exceptions import RedisError

from parley.v1 import chat_pb2
from parley_common.budgets.stream_slots import StreamSlots
from parley_common.budgets.users import UserBudgets
from parley_common.clients.history import HistoryClient
from parley_common.errors import InvalidRequest, PayloadTooLarge, Unavailable
from parley_common.messaging.amqp import envelope
from parley_common.messaging.replay import ReplayLog
from parley_common.messaging.topology import CHAT_REQUEST, SCHEMA_VERSION, Topology

from ..schemas import SendMessage
from ..settings import GatewaySettings
from ..turn_estimates import TurnEstimates
from .connection_slot import ConnectionSlot, too_many_streams
from .live import LiveStreams
from .ownership import OwnedConversations, claim_in_owned, release_claim
from .responses import Responses
from .stream import TurnStream

log = logging.getLogger(__name__)


def response_id_for(user_id: str, conversation_id: str, client_message_id: str) -> str:
    """The same message of the same user always maps to the same response."""
    digest = hashlib.sha256(f"{user_id}\x1f{conversation_id}\x1f{client_message_id}".encode()).hexdigest()
    return "r_" + digest[:32]


class Turns:
    """Starts turns (see the module)."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        topology: Topology,
        history: HistoryClient,
        replay: ReplayLog,
        slots: StreamSlots,
        streams: LiveStreams,
        responses: Responses,
        owned: OwnedConversations,
        publish_channel: AbstractChannel,
        reply_queue: str,
        user_budgets: UserBudgets | None = None,
        estimates: TurnEstimates | None = None,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.history = history
        self.replay = replay
        self.slots = slots
        self.streams = streams
        self.responses = responses
        self.owned = owned
        self.publish_channel = publish_channel
        self.reply_queue = reply_queue
        # Monthly per-user limits, checked before anything is published (None: no limits).
        self.user_budgets = user_budgets
        # What a turn may cost at most, held in the monthly budget from admission on.
        self.estimates = estimates

    async def start(self, user_id: str, conversation_id: str, body: SendMessage) -> TurnStream:
        """A message sent in a conversation; the same `client_message_id` again attaches to the
        response it started."""
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
        claimed = await claim_in_owned(self.owned, self.history, self.replay, user_id, conversation_id, response_id)
        if not claimed:
            # The client sent this message before: attach to that response instead of a second one.
            return await self.responses.attach(user_id, response_id, conversation_id, after_seq=0)
        return await self._launch(request)

    async def start_steered(self, request: chat_pb2.ChatRequest) -> TurnStream:
        """A regenerate, edit or continue (routes/versions.py has checked that the conversation
        and the message are the user's): claimed like a send, so the same client_request_id
        attaches to the same response, then admitted and published like one."""
        claimed = await self.replay.claim(request.response_id, request.user_id, request.conversation_id)
        self.owned.remember(request.user_id, request.conversation_id)
        if not claimed:
            return await self.responses.attach(
                request.user_id, request.response_id, request.conversation_id, after_seq=0
            )
        return await self._launch(request)

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

    async def _launch(self, request: chat_pb2.ChatRequest) -> TurnStream:
        """Admit and publish a claimed request. Whatever stops it (a limit, Redis, the broker, a
        bug) gives its claim back, so the same message can be sent again at once."""
        try:
            return await self._admit_and_publish(request)
        except BaseException:
            self.streams.forget(request.response_id)
            await release_claim(self.replay, request.response_id)
            raise

    async def _worst_case(self, request: chat_pb2.ChatRequest) -> tuple[int, int] | None:
        """What the turn's hold in the user's monthly budget is: its worst case, as far as it is
        known here (the orchestrator holds the exact one once it has the prompt; the answer's
        completion charges what was used). None: the user's plan limits nothing."""
        if self.user_budgets is None or not self.user_budgets.limited(request.user_id):
            return None
        return await self.estimates.worst_case(request) if self.estimates is not None else (0, 0)

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
        # The monthly budget's hold and a stream slot, both in one round trip. Over the monthly
        # limit: 429 user_budget_exceeded (whatever the slot's answer), and nothing reaches the bus.
        worst = await self._worst_case(request)
        try:
            async with self.slots.redis.pipeline(transaction=False) as pipe:
                hold = None
                if worst is not None and self.user_budgets is not None:
                    hold = self.user_budgets.queue_hold(pipe, request.user_id, response_id, *worst)
                slot = self.slots.queue_acquire(pipe, request.user_id, response_id, connection.connection_id)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            # Cut short (Redis failed, or the request was cancelled): both may be taken in Redis.
            with contextlib.suppress(Exception):
                await self.slots.release(request.user_id, response_id)
                await connection.release()
            if worst is not None:
                await self._release_budget(request)
            raise
        try:
            if hold is not None:
                await hold(replies[0])
        except BaseException:
            # The slot may be taken in Redis: give it back once known.
            with contextlib.suppress(Exception):
                if await slot(replies[-1]) is None:
                    await self.slots.release(request.user_id, response_id)
                    await connection.release()
            raise
        refused = await slot(replies[-1])
        if refused is not None and await self.slots.free_finished(request.user_id, self.replay.finished):
            # Some of those answers had ended, their slots not yet given back: ask once more.
            refused = await self.slots.acquire(request.user_id, response_id, connection.connection_id)
        if refused is not None:
            await self._release_budget(request)
            raise too_many_streams(refused)
        feed = self.streams.expect(response_id)
        request.reply_to = self.reply_queue
        request.created_at_ms = int(time.time() * 1000)
        try:
            await self.publish_channel.default_exchange.publish(
                envelope(request, message_type=CHAT_REQUEST, idempotency_key=response_id),
                routing_key=self.topology.requests_queue,
                mandatory=True,
            )
        except Exception as exc:
            self.streams.forget(response_id)
            await self.slots.release(request.user_id, response_id)
            await connection.release()
            await self._release_budget(request)
            log.error("could not queue the request", extra={"error": str(exc)})
            raise Unavailable("the chat service is unavailable, try again", code="queue_unavailable") from None
        return TurnStream(
            response_id,
            request.conversation_id,
            self.streams.relay(feed, response_id, request.conversation_id, 0),
            slot=connection,
            feed=feed,
        )
