"""The stream slot one connection holds while it is served (parley_common.budgets.stream_slots),
renewed on a timer while the connection lasts, and the 429 a refused slot gives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from parley_common.budgets.stream_slots import Refused, StreamSlots
from parley_common.errors import RateLimited

log = logging.getLogger(__name__)


def too_many_streams(refused: Refused) -> RateLimited:
    return RateLimited(
        f"you already have {refused.in_use} streams open or answers being generated, the most at once; "
        "wait for one to finish",
        code="too_many_streams",
        retry_after_s=1,
    )


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


class Renewal:
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
