"""Responses already started: attach a connection to one (a resume after Last-Event-ID, from
any gateway; the same message or request sent again) and cancel one.

Every open stream counts against the user's stream limit; the first connection watching an
answer being generated rides on that answer's slot (parley_common.budgets.stream_slots).
"""

from __future__ import annotations

from parley_common.budgets.stream_slots import StreamSlots
from parley_common.errors import NotFound
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ReplayLog

from .connection_slot import ConnectionSlot, too_many_streams
from .live import LiveStreams
from .stream import TurnStream


class Responses:
    def __init__(
        self, *, replay: ReplayLog, slots: StreamSlots, streams: LiveStreams, cancellations: Cancellations
    ) -> None:
        self.replay = replay
        self.slots = slots
        self.streams = streams
        self.cancellations = cancellations

    async def resume(self, user_id: str, response_id: str, after_seq: int) -> TurnStream | None:
        """The frames after `after_seq`, then the live tail; None when the response ended at or
        before frame `after_seq` (a client that saw `done` reconnecting): nothing more will come."""
        record = await self.replay.owner_record(response_id)
        if record is None or record[0] != user_id:
            raise NotFound("response not found", code="response_not_found")
        if after_seq and await self.replay.ended_by(response_id, after_seq):
            return None
        # Known before the first frame, so even a notice sent before it names the conversation.
        return await self.attach(user_id, response_id, record[1], after_seq)

    async def started(self, user_id: str, response_id: str) -> TurnStream | None:
        """The stream of `response_id` when this user already started it (a request sent again
        attaches to its response before the message it acted on is checked again), else None."""
        record = await self.replay.owner_record(response_id)
        if record is None or record[0] != user_id:
            return None
        return await self.attach(user_id, response_id, record[1], after_seq=0)

    async def attach(self, user_id: str, response_id: str, conversation_id: str, after_seq: int) -> TurnStream:
        """A stream of a response claimed by `user_id`, from the replay log after `after_seq`;
        429 too_many_streams when the user's stream slots are all in use."""
        connection = ConnectionSlot(self.slots, user_id, response_id)
        refused = await self.slots.acquire_connection(user_id, response_id, connection.connection_id)
        if refused is not None and await self.slots.free_finished(user_id, self.replay.finished):
            refused = await self.slots.acquire_connection(user_id, response_id, connection.connection_id)
        if refused is not None:
            raise too_many_streams(refused)
        feed = self.streams.from_log(response_id, after_seq)
        return TurnStream(
            response_id,
            conversation_id,
            self.streams.relay(feed, response_id, conversation_id, after_seq),
            slot=connection,
            feed=feed,
        )

    async def cancel(self, user_id: str, response_id: str) -> str:
        """Stop generating a response: "cancelling", or "finished" when it had already ended."""
        if await self.replay.owner(response_id) != user_id:
            raise NotFound("response not found", code="response_not_found")
        if await self.replay.finished(response_id):
            return "finished"
        await self.cancellations.request(response_id, user_id, "user")
        return "cancelling"
