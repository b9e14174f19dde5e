"""Chat turns at the edge: start one (publish a ChatRequest) and relay its frames as SSE.

A live turn is read from this gateway's reply queue; a resumed one from the replay log.
Both feed the same relay, which adds heartbeats, an idle timeout and a final event on
shutdown, and drops frames the client already has.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from parley.v1 import chat_pb2
from parley_common.amqp import PoisonMessage, envelope, open_envelope
from parley_common.errors import InvalidRequest, NotFound, PayloadTooLarge, Unavailable
from parley_common.history_client import HistoryClient
from parley_common.replay import ReplayLog, is_terminal
from parley_common.topology import CHAT_REQUEST, SCHEMA_VERSION, STREAM_EVENT, Topology

from .schemas import SendMessage
from .settings import GatewaySettings
from .sse import HEARTBEAT, encode_event, encode_local_error

log = logging.getLogger(__name__)


class _Shutdown:
    pass


SHUTDOWN: Final = _Shutdown()
Feed = asyncio.Queue[chat_pb2.StreamEvent | _Shutdown]


def response_id_for(user_id: str, conversation_id: str, client_message_id: str) -> str:
    """The same message of the same user always maps to the same response."""
    digest = hashlib.sha256(f"{user_id}\x1f{conversation_id}\x1f{client_message_id}".encode()).hexdigest()
    return "r_" + digest[:32]


class TurnStream:
    """What a route returns: the response id (known before the first frame) and the SSE body."""

    def __init__(self, response_id: str, conversation_id: str, body: AsyncIterator[bytes]) -> None:
        self.response_id = response_id
        self.conversation_id = conversation_id
        self.body = body


class Turns:
    def __init__(
        self,
        *,
        settings: GatewaySettings,
        topology: Topology,
        history: HistoryClient,
        replay: ReplayLog,
        publish_channel: AbstractChannel,
        reply_queue: str,
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.history = history
        self.replay = replay
        self.publish_channel = publish_channel
        self.reply_queue = reply_queue
        self.feeds: set[Feed] = set()
        # Live turns started here, by response id: the frames arriving on this gateway's
        # reply queue are handed to them.
        self.live: dict[str, Feed] = {}

    async def on_frame(self, message: AbstractIncomingMessage) -> None:
        """Consumer of this gateway's reply queue (no-ack: the replay log is the durable copy)."""
        try:
            event = open_envelope(message, chat_pb2.StreamEvent, STREAM_EVENT)
        except PoisonMessage as exc:
            log.error("dropping bad frame", extra={"reason": str(exc)})
            return
        feed = self.live.get(event.response_id)
        if feed is not None:
            feed.put_nowait(event)

    def shutdown(self) -> None:
        """Give every open stream its final event."""
        for feed in self.feeds:
            feed.put_nowait(SHUTDOWN)

    async def start(self, user_id: str, conversation_id: str, body: SendMessage) -> TurnStream:
        if not body.content.strip():
            raise InvalidRequest("content is empty", code="empty_content")
        if len(body.content) > self.settings.max_content_chars:
            raise PayloadTooLarge(
                f"content is longer than {self.settings.max_content_chars} characters", code="content_too_long"
            )
        client_message_id = body.client_message_id or "m_" + uuid.uuid4().hex
        response_id = response_id_for(user_id, conversation_id, client_message_id)
        # Both in one round trip's time; the ownership check gives a wrong conversation its 404.
        ownership = asyncio.ensure_future(self.history.get_conversation(user_id, conversation_id))
        try:
            claimed = await self.replay.claim(response_id, user_id)
        except BaseException:
            ownership.cancel()
            raise
        try:
            await ownership
        except BaseException:
            if claimed:
                await self.replay.release(response_id)
            raise
        if not claimed:
            # The client sent this message before: attach to that response instead of a second one.
            return self.resume_claimed(response_id, conversation_id, after_seq=0)

        feed: Feed = asyncio.Queue()
        self.live[response_id] = feed

        async def cleanup() -> None:
            self.live.pop(response_id, None)

        request = chat_pb2.ChatRequest(
            version=SCHEMA_VERSION,
            response_id=response_id,
            user_id=user_id,
            conversation_id=conversation_id,
            client_message_id=client_message_id,
            content=body.content,
            model=body.model or "",
            reply_to=self.reply_queue,
            created_at_ms=int(time.time() * 1000),
            max_output_tokens=body.max_output_tokens or 0,
        )
        try:
            await self.publish_channel.default_exchange.publish(
                envelope(request, message_type=CHAT_REQUEST, idempotency_key=response_id),
                routing_key=self.topology.requests_queue,
                mandatory=True,
            )
        except Exception as exc:
            await cleanup()
            await self.replay.release(response_id)
            log.error("could not queue the request", extra={"error": str(exc)})
            raise Unavailable("the chat service is unavailable, try again", code="queue_unavailable") from None
        return TurnStream(response_id, conversation_id, self._relay(feed, response_id, conversation_id, 0, cleanup))

    async def resume(self, user_id: str, response_id: str, after_seq: int) -> TurnStream:
        if await self.replay.owner(response_id) != user_id:
            raise NotFound("response not found", code="response_not_found")
        return self.resume_claimed(response_id, "", after_seq)

    def resume_claimed(self, response_id: str, conversation_id: str, after_seq: int) -> TurnStream:
        feed: Feed = asyncio.Queue()

        async def pump() -> None:
            for event in await self.replay.read_after(response_id, after_seq):
                feed.put_nowait(event)
                if is_terminal(event):
                    return
            last = max(after_seq, 0)
            async for event in self.replay.follow(response_id, last, block_ms=int(self.settings.heartbeat_s * 1000)):
                if event is not None:
                    feed.put_nowait(event)
                    if is_terminal(event):
                        return

        task = asyncio.create_task(pump())

        async def cleanup() -> None:
            task.cancel()

        return TurnStream(
            response_id, conversation_id, self._relay(feed, response_id, conversation_id, after_seq, cleanup)
        )

    async def _relay(
        self,
        feed: Feed,
        response_id: str,
        conversation_id: str,
        after_seq: int,
        cleanup: Callable[[], Awaitable[None]],
    ) -> AsyncIterator[bytes]:
        self.feeds.add(feed)
        last = after_seq
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    async with asyncio.timeout(self.settings.heartbeat_s):
                        item = await feed.get()
                except TimeoutError:
                    if time.monotonic() - idle_since >= self.settings.stream_idle_timeout_s:
                        yield encode_local_error(
                            response_id,
                            conversation_id,
                            "stream_timeout",
                            "no answer from the backend in time; resume or send again",
                            True,
                        )
                        return
                    yield HEARTBEAT
                    continue
                if isinstance(item, _Shutdown):
                    yield encode_local_error(
                        response_id,
                        conversation_id,
                        "gateway_shutdown",
                        "this gateway is restarting; resume with Last-Event-ID",
                        True,
                    )
                    return
                if item.seq <= last:
                    continue  # the client has it already
                last = item.seq
                conversation_id = conversation_id or item.conversation_id
                idle_since = time.monotonic()
                yield encode_event(item)
                if is_terminal(item):
                    return
        finally:
            self.feeds.discard(feed)
            await cleanup()
