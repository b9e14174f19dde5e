"""One turn at a time per conversation.

Each request takes the conversation's "latest turn" pointer in Redis (one script, atomic)
and learns which turn came before it, and the newest frame of that turn's replay log, in the
same round trip; its place is recorded, so a request delivered again after its orchestrator
stopped (SIGTERM or SIGKILL) waits for the same turn as before. It then waits until that turn
has finished — in "replace" mode after cancelling it — and, when it reached a model, until its
answer is in history, so the new message is stored after it and the prompt includes it. A turn
that ended before reaching a model stores no answer, so the one before it is waited for in its
place, and so on back (after a history outage, the last answer that streamed may still be on its
way to history while the turns after it failed), until a turn Redis no longer knows (its replay
log expired: replay_finished_ttl_s after it ended). Requests form a chain; their streams and
their history never interleave. Whether that answer is in history a new message's append can
ask itself (take_turn's check_stored=False, AppendMessage's after_stored_id), in the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from parley.v1 import chat_pb2
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
# How many turns that ended before reaching a model are looked past for the answer before them.
MAX_TURNS_BACK = 100

# KEYS: the conversation's latest turn, this turn's place; ARGV: response id, ttl, the prefix
# of replay-log keys, the prefix of response-owner keys. Returns {the turn before this one (""
# for none): the one recorded at its first entry, if it entered before; and, when there is one,
# whether its owner record exists (1/0; asked only when its log is empty) and the fields of the
# newest frame of its replay log (XREVRANGE COUNT 1: whether it finished, and, when it ended
# with `done`, that it reached a model; the whole log of a long answer is never sent)}: what
# waiting for it needs first, in the same round trip. The previous turn's keys are named from
# what the script reads, so they are not in KEYS: Parley's Redis runs without cluster mode
# (README, "Deploying and scaling"); on a Redis Cluster they could live on another node.
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
local last = redis.call('XREVRANGE', ARGV[3] .. previous, '+', '-', 'COUNT', 1)
if #last == 0 then
  return {previous, redis.call('EXISTS', ARGV[4] .. previous)}
end
return {previous, 1, last[1][2]}
"""


@dataclass(frozen=True)
class Previous:
    """The turn before this one, as entering found it."""

    response_id: str
    last: chat_pb2.StreamEvent | None  # the newest frame of its replay log then (None: no frame)
    owned: bool  # its owner record existed then (only asked when it had no frames)

    @property
    def finished(self) -> bool:
        """ReplayLog.finished, as of then."""
        return is_terminal(self.last) if self.last is not None else not self.owned


@dataclass(frozen=True)
class Taken:
    """What take_turn did: whether there was a turn before this one, and the id of the answer
    waited for whose storing is left for the caller to check ("" when there is none)."""

    waited: bool
    unchecked: str = ""
    # When the wait ends at the latest (time.monotonic(); max_wait_s after it began), for
    # until_stored(unchecked) to keep to.
    deadline: float = math.inf


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
        """Become the conversation's latest turn; returns the turn before it, if any, with the
        newest frame of its replay log as it is now (one round trip).

        A request delivered again (its orchestrator stopped while it waited) keeps the place
        it took the first time, whatever has entered since: it still waits for the same turn.
        """
        answer = await self._enter(
            keys=[self.key(conversation_id), self.place_key(conversation_id, response_id)],
            args=[response_id, self.ttl_s, self.replay.key(""), self.replay.owner_key("")],
        )
        if len(answer) < 2:
            return None
        last = None
        if len(answer) > 2:
            fields = answer[2]
            last = chat_pb2.StreamEvent.FromString(dict(zip(fields[::2], fields[1::2], strict=True))[b"e"])
        return Previous(answer[0].decode(), last, bool(answer[1]))

    async def take_turn(
        self,
        user_id: str,
        conversation_id: str,
        response_id: str,
        replace: bool,
        on_queued: Callable[[], Awaitable[object]],
        *,
        check_stored: bool = True,
    ) -> Taken:
        """enter(), then wait_for() the turn before, if any (see wait_for for `check_stored`)."""
        previous = await self.enter(conversation_id, response_id)
        if previous is None:
            return Taken(waited=False)
        deadline = time.monotonic() + self.max_wait_s
        unchecked = await self.wait_for(
            previous,
            user_id,
            conversation_id,
            replace,
            on_queued,
            waiting=response_id,
            check_stored=check_stored,
            deadline=deadline,
        )
        return Taken(waited=True, unchecked=unchecked, deadline=deadline)

    async def wait_for(
        self,
        previous: Previous,
        user_id: str,
        conversation_id: str,
        replace: bool,
        on_queued: Callable[[], Awaitable[object]],
        *,
        waiting: str = "",
        check_stored: bool = True,
        deadline: float | None = None,
    ) -> str:
        """Return once `previous` (as `enter` found it) has finished and its answer is stored (or
        is known to be lost). When it ended before reaching a model (an error: no answer of it
        will be stored), the same for the turn before it, and so on back to one that reached a
        model, to one Redis no longer knows, or to the first turn; never to `waiting` (the turn
        that waits) or to a turn met before on the way.

        `on_queued` runs only when the turn waited for is still running: a message sent after
        the answer before it ended (the usual case) is not shown as queued. In the usual case
        (the answer before ended and was stored a while ago) one read of that answer by its
        id is all the waiting takes; without `check_stored` not even that: the answer's id is
        returned instead (else ""), for the caller's append to require it (AppendMessage's
        after_stored_id) and to call until_stored() only when history has not stored it yet.
        The wait ends by `deadline` (time.monotonic()), max_wait_s from now when not given.
        """
        if deadline is None:
            deadline = time.monotonic() + self.max_wait_s
        met = {waiting, previous.response_id}
        for _ in range(MAX_TURNS_BACK):
            response_id, last = previous.response_id, previous.last
            if not previous.finished:
                if replace:
                    await self.cancellations.request(response_id, user_id, "replaced")
                await on_queued()
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await refreshing(self._until_terminal(response_id), on_queued)
                except TimeoutError:
                    raise Unavailable(
                        "the previous answer in this conversation is still running", code="conversation_busy"
                    ) from None
                last = await self.replay.last_frame(response_id)
            if await self._reached_model(response_id, last):
                break
            if last is None and not previous.owned:
                return ""  # nothing is known of it any more: nor of the turns before it
            before = await self._before(conversation_id, response_id)
            if before is None or before.response_id in met:
                return ""  # the first turn, or one Redis no longer knows the place of
            met.add(before.response_id)
            previous = before
        else:
            return ""  # that many turns in a row ended before a model: none is waited for
        if not check_stored:
            return response_id
        await self.until_stored(user_id, conversation_id, response_id, deadline)
        return ""

    async def until_stored(
        self, user_id: str, conversation_id: str, response_id: str, deadline: float | None = None
    ) -> None:
        """Return once history holds the answer `response_id` (persisted from the bus a moment
        after its last frame), or its replay log has expired (nothing to wait for), or
        HISTORY_WAIT_S (or the `deadline`, a time.monotonic() value, if sooner) has passed."""
        deadline = min(math.inf if deadline is None else deadline, time.monotonic() + HISTORY_WAIT_S)
        with contextlib.suppress(ParleyError):  # NotFound: not stored yet; asked again below, where a failure counts
            await self.history.get_message(user_id, conversation_id, response_id)
            return
        asked_by_id = time.monotonic()
        while time.monotonic() < deadline:
            page = await self.history.get_messages(user_id, conversation_id, limit=RECENT)
            if any(m.id == response_id for m in page.messages):
                return
            if time.monotonic() - asked_by_id >= BY_ID_EVERY_S:
                # Not on the current path: a continuation (stored in the message it continues)
                # or a version made current elsewhere meanwhile. Asked by id now and then.
                asked_by_id = time.monotonic()
                with contextlib.suppress(NotFound):
                    await self.history.get_message(user_id, conversation_id, response_id)
                    return
            if not await self.redis.exists(self.replay.owner_key(response_id)):
                return  # expired long ago: nothing to wait for
            await asyncio.sleep(0.02)

    async def _before(self, conversation_id: str, response_id: str) -> Previous | None:
        """The turn that came before `response_id` (its place, recorded when it entered), with its
        replay log's newest frame as it is now; None when there was none or it is forgotten."""
        before: bytes | None = await self.redis.get(self.place_key(conversation_id, response_id))  # type: ignore[assignment]
        if not before:
            return None
        before_id = before.decode()
        last = await self.replay.last_frame(before_id)
        owned = last is None and bool(await self.redis.exists(self.replay.owner_key(before_id)))
        return Previous(before_id, last, owned)

    async def _reached_model(self, response_id: str, last: chat_pb2.StreamEvent | None) -> bool:
        """Whether the turn's replay log, whose newest frame is `last`, holds a `meta` frame: the
        turn reached a model, and its answer (complete, interrupted or failed) will be stored.

        A `done` frame always follows the turn's `meta` frame (the worker, `Dispatch.end_cancelled`,
        `replay_stored_answer`, cached answers and image turns all send `meta` first), so only
        an `error` (which may end a turn before or after it reached a model) needs the log read.
        """
        if last is None:
            return False
        if last.WhichOneof("kind") == "done":
            return True
        frames = await self.replay.read_after(response_id, 0)
        return any(f.WhichOneof("kind") == "meta" for f in frames)

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
