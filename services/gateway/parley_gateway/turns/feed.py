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


@dataclass(eq=False)
class Feed:
    """Frames on their way to one client; bounded, so a slow client costs bounded memory."""

    queue: asyncio.Queue[Item]
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
