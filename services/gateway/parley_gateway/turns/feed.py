"""What flows to one client's relay: a bounded queue (`Feed`) of the turn's frames, from this
gateway's reply queue or from the replay log, and the markers the gateway puts in it (shutdown,
the client gone, the log unreadable or trimmed); and what the relay gives out: frames,
heartbeats and `Notice`s (events the gateway makes up itself)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from parley.v1 import chat_pb2


class Shutdown:
    """This gateway is stopping: the relay ends with a `gateway_shutdown` notice."""


class Wake:
    """Makes a waiting relay look at its feed again (after the broker connection came back)."""


class LogUnavailable:
    """The replay log could not be read (Redis down): the relay ends with a notice."""


@dataclass(frozen=True)
class Truncated:
    """Frames after `after_seq` are no longer in the log: the oldest kept is `oldest_seq`."""

    after_seq: int
    oldest_seq: int


class Ended:
    """The response ended before the frame a resume started after: nothing more will come."""


class Gone:
    """The client's connection is gone: the relay ends at once, sending nothing more."""


SHUTDOWN: Final = Shutdown()
ENDED: Final = Ended()
LOG_UNAVAILABLE: Final = LogUnavailable()
GONE: Final = Gone()
WAKE: Final = Wake()
Item: TypeAlias = chat_pb2.StreamEvent | Shutdown | Wake | LogUnavailable | Truncated | Ended | Gone


class FrameQueue:
    """The part of `asyncio.Queue` a feed uses, bounded, in a tenth of its memory: a list, and a
    future only while someone waits (an `asyncio.Queue` holds three deques and an Event, about
    2.5 KB more, for every open stream). A feed has one reader (its relay) and at most one
    writer that waits (the replay log's pump); more wait correctly, each woken to look again."""

    __slots__ = ("_getters", "_head", "_items", "_putters", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        # The items from `_head` on are queued (those before it were read: dropped in bulk, so
        # that reading stays cheap in a long queue).
        self._items: list[Item | None] = []
        self._head = 0
        self._getters: list[asyncio.Future[None]] = []
        self._putters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return self._head == len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._head

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    def put_nowait(self, item: Item) -> None:
        if self.full():
            raise asyncio.QueueFull
        self._items.append(item)
        _wake(self._getters)

    def get_nowait(self) -> Item:
        items, head = self._items, self._head
        if head == len(items):
            raise asyncio.QueueEmpty
        item = items[head]
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= 64 and head * 2 >= len(items):
            del items[:head]
            head = 0
        self._head = head
        _wake(self._putters)
        assert item is not None
        return item

    async def get(self) -> Item:
        while self.empty():
            await _wait(self._getters)
        return self.get_nowait()

    async def put(self, item: Item) -> None:
        while self.full():
            await _wait(self._putters)
        self.put_nowait(item)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


async def _wait(waiters: list[asyncio.Future[None]]) -> None:
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    finally:
        # Cancelled (a timeout): not woken again. Woken: already gone from the list.
        if waiter in waiters:
            waiters.remove(waiter)


@dataclass(eq=False)
class Feed:
    """Frames on their way to one client; bounded, so a slow client costs bounded memory."""

    queue: FrameQueue
    # Set when the live queue overflowed: the relay then continues from the replay log.
    lagging: bool = False
    # Fed from this gateway's reply queue (False: from the replay log).
    live: bool = True
    # What feeds it from the replay log; cancelled when the relay ends.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # When the turn was accepted (for time to first token).
    created: float = field(default_factory=time.monotonic)

    def put_displacing(self, item: Item) -> None:
        """Put `item` in, dropping the oldest frames when the queue is full (nobody will read them:
        the relay ends on `item`)."""
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


@dataclass(frozen=True)
class Notice:
    """An event the gateway makes up itself (timeout, shutdown): an `error` with no frame id."""

    response_id: str
    conversation_id: str
    code: str
    message: str
    retryable: bool = True


class Heartbeat:
    """Nothing to send for a while: a comment line keeps the connection open."""


HEARTBEAT_ITEM: Final = Heartbeat()
Out: TypeAlias = chat_pb2.StreamEvent | Notice | Heartbeat
