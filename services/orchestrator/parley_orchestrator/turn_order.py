"""One turn at a time per conversation.

Each request takes the conversation's "latest turn" pointer in Redis (one script, atomic)
and learns which turn came before it, and that turn's replay log, in the same round trip; its
place is recorded, so a request delivered again after its orchestrator stopped (SIGTERM or
SIGKILL) waits for the same turn as before. It then waits until that turn has finished — in
"replace" mode after cancelling it — and until the previous answer is in history, so the new
message is stored after it and the prompt includes it. Requests form a chain; their streams and
their history never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from parley.v1 import chat_pb2, history_pb2
from parley_common.budgets.waiting import QUEUED_REFRESH_S
from parley_common.clients.history import HistoryClient
from parley_common.errors import NotFound, ParleyError, Unavailable
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ReplayLog, is_terminal, latest_turn_key

# How long to wait for a finished answer to appear in history before going on without it.
HISTORY_WAIT_S = 10.0
# How many of the newest messages are looked through for the previous answer.
RECENT = 10
# How often the previous answer is also asked for by its id while waiting for it.
BY_ID_EVERY_S = 0.25

# KEYS: the conversation's latest turn, this turn's place; ARGV: response id, ttl, the prefix
# of replay-log keys, the prefix of response-owner keys. Returns {the turn before this one (""
# for none): the one recorded at its first entry, if it entered before; and, when there is one,
# whether its owner record exists (1/0; asked only when its log is empty) and its replay log
# (XRANGE entries)}: what waiting for
# it needs first, in the same round trip. The previous turn's keys are named from what the
# script reads, so they are not in KEYS: Parley's Redis runs without cluster mode (README,
# "Deploying and scaling"); on a Redis Cluster they could live on another node.
ENTER = """
local previous = redis.call('GET', KEYS[2])
if not previous then
  previous = redis.call('GET', KEYS[1]) or ''
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  redis.call('SET', KEYS[2], previous, 'EX', ARGV[2])
end
if previous == '' or previous == ARGV[1] then
  return {previous}
end
local frames = redis.call('XRANGE', ARGV[3] .. previous, '-', '+')
local owned = 1
if #frames == 0 then owned = redis.call('EXISTS', ARGV[4] .. previous) end
return {previous, owned, frames}
"""


@dataclass(frozen=True)
class Previous:
    """The turn before this one, as entering found it."""

    response_id: str
    frames: list[chat_pb2.StreamEvent]  # its replay log then
    owned: bool  # its owner record existed then (only asked when it had no frames)

    @property
    def finished(self) -> bool:
        """ReplayLog.finished, as of then."""
        return is_terminal(self.frames[-1]) if self.frames else not self.owned


class TurnOrder:
    def __init__(
        self,
        *,
        redis: Redis,
        namespace: str,
        replay: ReplayLog,
        history: HistoryClient,
        cancellations: Cancellations,
        max_wait_s: float,
        ttl_s: int = 3600,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.replay = replay
        self.history = history
        self.cancellations = cancellations
        self.max_wait_s = max_wait_s
        self.ttl_s = ttl_s
        self._enter = redis.register_script(ENTER)

    def key(self, conversation_id: str) -> str:
        return latest_turn_key(self.namespace, conversation_id)

    def place_key(self, conversation_id: str, response_id: str) -> str:
        """The turn that came before `response_id` ("" for none), kept from its first delivery."""
        return f"{self.key(conversation_id)}:before:{response_id}"

    async def enter(self, conversation_id: str, response_id: str) -> Previous | None:
        """Become the conversation's latest turn; returns the turn before it, if any, with its
        replay log as it is now (one round trip).

        A request delivered again (its orchestrator stopped while it waited) keeps the place
        it took the first time, whatever has entered since: it still waits for the same turn.
        """
        answer = await self._enter(
            keys=[self.key(conversation_id), self.place_key(conversation_id, response_id)],
            args=[response_id, self.ttl_s, self.replay.key(""), self.replay.owner_key("")],
        )
        if len(answer) < 3:
            return None
        previous, owned, rows = answer
        frames = [chat_pb2.StreamEvent.FromString(dict(zip(f[::2], f[1::2], strict=True))[b"e"]) for _, f in rows]
        return Previous(previous.decode(), frames, bool(owned))

    async def take_turn(
        self,
        user_id: str,
        conversation_id: str,
        response_id: str,
        replace: bool,
        on_queued: Callable[[], Awaitable[object]],
    ) -> bool:
        """enter(), then wait_for() the turn before, if any; True when there was one.

        The conversation's latest stored messages are asked for at once, alongside: in the
        usual case (the answer before ended and was stored a while ago) that one read is all
        the waiting takes.
        """
        recent = asyncio.ensure_future(self.history.get_messages(user_id, conversation_id, limit=RECENT))
        try:
            previous = await self.enter(conversation_id, response_id)
            if previous is None:
                return False
            await self.wait_for(previous.response_id, user_id, conversation_id, replace, on_queued, recent, previous)
            return True
        finally:
            if recent.done():
                if not recent.cancelled():
                    recent.exception()  # read, so an unused failure is not logged as unretrieved
            else:
                recent.cancel()

    async def wait_for(
        self,
        previous: str,
        user_id: str,
        conversation_id: str,
        replace: bool,
        on_queued: Callable[[], Awaitable[object]],
        recent: Awaitable[history_pb2.GetMessagesResponse] | None = None,
        entered: Previous | None = None,
    ) -> None:
        """Return once `previous` has finished and its answer is stored (or is known to be lost).

        `on_queued` runs only when the previous turn is still running: a message sent after
        the answer before it ended (the usual case) is not shown as queued. `recent`, when
        given, is a read of the latest messages started earlier (a message once stored stays
        stored, so finding the answer there is as good as finding it now). `entered`: what
        `enter` read of it, in place of reading its log again.
        """
        deadline = time.monotonic() + self.max_wait_s
        if entered is None:
            frames = await self.replay.read_after(previous, 0)
            finished = bool(frames and is_terminal(frames[-1])) or await self.replay.finished(previous)
        else:
            frames, finished = entered.frames, entered.finished
        if not finished:
            if replace:
                await self.cancellations.request(previous, user_id, "replaced")
            await on_queued()
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await refreshing(self._until_terminal(previous), on_queued)
            except TimeoutError:
                raise Unavailable(
                    "the previous answer in this conversation is still running", code="conversation_busy"
                ) from None
            frames = await self.replay.read_after(previous, 0)
        if not any(f.WhichOneof("kind") == "meta" for f in frames):
            return  # it ended before reaching a model (an error): no answer will be stored
        # The answer is persisted from the bus a moment after its last frame.
        deadline = min(deadline, time.monotonic() + HISTORY_WAIT_S)
        if recent is not None:
            with contextlib.suppress(ParleyError):  # read again below, where a failure counts
                if any(m.id == previous for m in (await recent).messages):
                    return
        asked_by_id = 0.0
        while time.monotonic() < deadline:
            page = await self.history.get_messages(user_id, conversation_id, limit=RECENT)
            if any(m.id == previous for m in page.messages):
                return
            if time.monotonic() - asked_by_id >= BY_ID_EVERY_S:
                # Not on the current path: a continuation (stored in the message it continues)
                # or a version made current elsewhere meanwhile. Asked by id now and then.
                asked_by_id = time.monotonic()
                with contextlib.suppress(NotFound):
                    await self.history.get_message(user_id, conversation_id, previous)
                    return
            if not await self.redis.exists(self.replay.owner_key(previous)):
                return  # expired long ago: nothing to wait for
            await asyncio.sleep(0.02)

    async def _until_terminal(self, response_id: str) -> None:
        if await self.replay.finished(response_id):
            return
        async for event in self.replay.follow(response_id, 0, block_ms=1000):
            if event is None:
                if await self.replay.finished(response_id):
                    return
                continue
            if is_terminal(event):
                return


async def refreshing(
    waiting: Awaitable[None], on_queued: Callable[[], Awaitable[object]], every_s: float = QUEUED_REFRESH_S
) -> None:
    """Await `waiting`, calling `on_queued` again every `every_s` meanwhile: the client's queued
    frame is refreshed, so the gateway never takes a turn waiting its turn for an idle stream."""
    task = asyncio.ensure_future(waiting)
    try:
        while not (await asyncio.wait({task}, timeout=every_s))[0]:
            await on_queued()
        task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
