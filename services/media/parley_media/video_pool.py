"""Where videos are decoded: each in a child process of its own, killed at a deadline.

What a video costs to decode is not known from its size: a 100 kB WebM of one 4096x4096
keyframe and thousands of "nothing changed" frames is a full-size decode per frame. So a video
never runs on the image threads. Each job is a fresh process forked from a forkserver that has
the decoders imported already (a few ms), with an address-space limit and a CPU-time limit;
the parent kills it when the wall-clock deadline passes or when the request is cancelled (the
client went away), and answers `media_too_complex`. At most `processes` run at once: a queue
of videos waits for each other, never an image upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import resource
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from parley_common.errors import InvalidRequest, ParleyError, PayloadTooLarge

log = logging.getLogger(__name__)
T = TypeVar("T")
_ERRORS: dict[str, type[ParleyError]] = {"InvalidRequest": InvalidRequest, "PayloadTooLarge": PayloadTooLarge}


def _child(
    sender: multiprocessing.connection.Connection,
    work: Callable[..., Any],
    args: tuple[Any, ...],
    cpu_s: int,
    memory_bytes: int,
) -> None:
    """In the child: limits first, then the work; its result or error goes back over the pipe."""
    reply: tuple[Any, ...]
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        reply = ("ok", work(*args))
    except ParleyError as err:
        reply = ("error", type(err).__name__, err.code, err.message)
    except MemoryError:
        reply = ("error", "InvalidRequest", "media_too_complex", "the video needs too much memory to decode")
    except Exception as exc:  # reported to the parent, which logs it
        reply = ("failed", f"{type(exc).__name__}: {exc}"[:500])
    sender.send(reply)
    sender.close()


def _receive(receiver: multiprocessing.connection.Connection) -> tuple[Any, ...] | None:
    """The child's reply, or None when it died first (killed, or past its CPU limit)."""
    try:
        return tuple(receiver.recv())
    except (EOFError, OSError):
        return None
    finally:
        receiver.close()


class VideoPool:
    def __init__(self, processes: int, deadline_s: float, memory_bytes: int) -> None:
        self.deadline_s = deadline_s
        self.memory_bytes = memory_bytes
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["parley_media.video"])
        self._slots = asyncio.Semaphore(processes)
        # Starting a process and waiting for its reply block: on these threads, never the loop.
        self._threads = ThreadPoolExecutor(max_workers=2 * processes, thread_name_prefix="media-video")
        self._running: dict[int, BaseProcess] = {}

    def running_pids(self) -> set[int]:
        return {pid for pid, process in self._running.items() if process.is_alive()}

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """`work(*args)` in a new child process once one of the slots is free; InvalidRequest
        (media_too_complex) when it runs past the deadline or its limits."""
        async with self._slots:
            return await self._run_one(work, args)

    async def _run_one(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        loop = asyncio.get_running_loop()
        receiver, sender = self._context.Pipe(duplex=False)
        cpu_s = math.ceil(self.deadline_s) + 1
        process = self._context.Process(
            target=_child, args=(sender, work, args, cpu_s, self.memory_bytes), name="media-video", daemon=True
        )
        try:
            await loop.run_in_executor(self._threads, process.start)
        finally:
            sender.close()
        assert process.pid is not None
        self._running[process.pid] = process
        reply_future = loop.run_in_executor(self._threads, _receive, receiver)
        try:
            try:
                reply = await asyncio.wait_for(asyncio.shield(reply_future), self.deadline_s)
            except TimeoutError:
                log.warning("video processing stopped at its deadline", extra={"deadline_s": self.deadline_s})
                raise InvalidRequest(
                    f"the video takes more than {self.deadline_s:g} s to process", code="media_too_complex"
                ) from None
        finally:
            # Past the deadline, cancelled, or done: the process does not outlive the request.
            if process.is_alive():
                process.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(reply_future)
            await loop.run_in_executor(self._threads, process.join, 5.0)
            self._running.pop(process.pid, None)
            if process.exitcode is None:
                log.error("a video process did not exit after SIGKILL", extra={"pid": process.pid})
        if reply is None:
            if process.exitcode in (-signal.SIGXCPU, -signal.SIGKILL):
                raise InvalidRequest("the video needs too much CPU or memory to process", code="media_too_complex")
            raise ParleyError(f"video processing failed (exit code {process.exitcode})")
        if reply[0] == "ok":
            result: T = reply[1]
            return result
        if reply[0] == "error":
            raise _ERRORS.get(reply[1], ParleyError)(reply[3], code=reply[2])
        log.error("video processing failed", extra={"reason": reply[1]})
        raise ParleyError("video processing failed")

    def shutdown(self) -> None:
        for process in list(self._running.values()):
            if process.is_alive():
                process.kill()
        self._threads.shutdown(wait=True, cancel_futures=True)
