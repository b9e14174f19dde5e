"""`TurnStream`: what a route returns for a turn — its response id (known before the first
frame), its events, and the stream slot of the connection that carries them, given back
before the answer's last frame is sent (a client that reads `done` and at once starts another
answer finds the slot free) or however else the connection ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError

from parley.v1 import chat_pb2
from parley_common.messaging.replay import is_terminal

from ..sse import HEARTBEAT, encode_event, encode_local_error
from .connection_slot import ConnectionSlot, Renewal
from .feed import GONE, Feed, Heartbeat, Notice, Out

log = logging.getLogger(__name__)


class TurnStream:
    """A turn's events for one connection, and the stream slot that connection holds."""

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
        self._renewing: Renewal | None = None
        # Where the events come from, so that a client gone ends them (see `interrupt`).
        self.feed = feed

    def interrupt(self) -> None:
        """The client is gone: the events end at once, without sending anything more (a
        stream without a feed ends when its next write finds the connection closed)."""
        if self.feed is not None:
            self.feed.put_displacing(GONE)

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
            self._renewing = Renewal(self.slot)
        try:
            yield
        finally:
            try:
                if self.feed is not None:
                    # Events that never ran (a response given up before its body was served)
                    # would skip their own cleanup on `aclose` (the feed's tasks, its place
                    # among the live streams): run them to their end, which `interrupt` makes
                    # come at once. Events already ended or closed end here at once.
                    self.interrupt()
                    async for _ in self.events:
                        pass
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
