"""Where image and video work runs: a few threads, and a bound on jobs in progress.

Pillow and FFmpeg release the GIL while they decode, resize and encode, so threads use every
core without copying 20 MB files into other processes. The bound keeps memory in check: each
job holds its file and decoded frames until it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class CpuPool:
    def __init__(self, threads: int, max_jobs: int) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="media-cpu")
        self.jobs = asyncio.Semaphore(max_jobs)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` on a worker thread, once fewer than max_jobs are running."""
        async with self.jobs:
            return await asyncio.get_running_loop().run_in_executor(self.executor, work, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
