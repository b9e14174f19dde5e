"""`eventually()`: poll a condition with a deadline, never a fixed sleep standing in for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float = 20.0,
    what: str = "",
    interval_s: float = 0.05,
    passing: tuple[type[BaseException], ...] = (),
) -> T:
    """Await `check()` every `interval_s` until it returns something truthy, and return that.
    An exception in `passing` counts as "not yet" (a server restarting, a leader election).
    Fails with `what` (or the check's name) and the last answer when `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = await check()
        except passing as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() > deadline:
            name = what or getattr(check, "__name__", repr(check))
            raise AssertionError(f"not true after {timeout_s:g}s: {name} (last answer: {last!r})")
        await asyncio.sleep(interval_s)
