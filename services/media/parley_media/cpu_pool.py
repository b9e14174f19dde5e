"""Where image work runs: a few threads, a bound on jobs in progress, and a budget of decoded
bytes in flight.

Pillow releases the GIL while it decodes, resizes and encodes, so threads use every core
without copying 20 MB files into other processes. A job count alone does not bound memory: a
190 kB PNG can decode to 200 MB. So each job declares what it will hold (estimated from the
image header before anything is decoded) and waits, in arrival order, until that fits in the
budget; a job larger than the whole budget could never run and is refused by its caller.
Videos do not run here (video_pool).

Freed pixel memory goes back to the system: glibc would otherwise keep Pillow's 16 MB blocks
in its heaps after the first large image (its mmap threshold grows with each freed block), and
the service's RSS would stay at its peak.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_M_MMAP_THRESHOLD = -3
# Allocations from this size on are mmapped, so freeing them unmaps them (a fixed threshold
# also stops glibc raising it); small allocations stay on the heap as before.
MMAP_THRESHOLD_BYTES = 1024 * 1024


def give_freed_memory_back() -> None:
    """Fix glibc's mmap threshold (no-op elsewhere than glibc)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def trim_heap() -> None:
    """Return free heap pages to the system after a large job (glibc only)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)


class MemoryBudget:
    """Bytes that jobs reserve before they run and give back after; waiters are served in order."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> None:
        size = min(size, self.total)
        if not self._waiters and self.used + size <= self.total:
            self.used += size
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (size, granted)
        self._waiters.append(waiter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted just as it was cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                self._wake()
            raise

    def release(self, size: int) -> None:
        self.used -= min(size, self.total)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            size, granted = self._waiters.popleft()
            if not granted.done():
                self.used += size
                granted.set_result(None)


class CpuPool:
    def __init__(self, threads: int, max_jobs: int, memory_budget_bytes: int = 1 << 40) -> None:
        give_freed_memory_back()
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="media-cpu")
        self.jobs = asyncio.Semaphore(max_jobs)
        self.memory = MemoryBudget(memory_budget_bytes)

    async def run(self, work: Callable[..., T], *args: Any, memory: int = 0) -> T:
        """`work(*args)` on a worker thread, once fewer than max_jobs are running and `memory`
        bytes fit in the budget."""
        await self.memory.acquire(memory)
        try:
            async with self.jobs:
                return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)
        finally:
            self.memory.release(memory)
            if memory >= 64 * 1024 * 1024:
                # Not awaited by the caller: trimming a large heap takes a few ms.
                with contextlib.suppress(RuntimeError):  # shut down meanwhile
                    self.executor.submit(trim_heap)

    async def peek(self, work: Callable[..., T], *args: Any) -> T:
        """Light work (reading a header) on a worker thread, outside the job and memory bounds."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
