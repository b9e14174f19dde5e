"""py-spy's raw output (`py-spy record --format raw`: one line per distinct stack, root first,
frames separated by ';', then the number of samples) summarised into where a process's CPU goes:
by library (the leaf frame's), by function (the leaf), and by the innermost Parley frame (the
Parley code that, itself or through what it called, spent the time)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

NO_PARLEY_FRAME = "(no Parley frame: the event loop, libraries)"
_LOOP_FRAMES = ("Runner.run", "run_until_complete", "run_forever", "_run_once", "Handle._run")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def library(self) -> str:
        """The top package of the file: with py-spy's `--full-filenames`, what follows
        `site-packages/` or `lib/pythonX.Y/` (`…/site-packages/opentelemetry/trace/__init__.py` →
        opentelemetry, `…/lib/python3.11/json/encoder.py` → json), or Parley's package in the
        source tree (`…/services/gateway/parley_gateway/app.py` → parley_gateway); a shortened
        file's first part (`aio_pika/channel.py` → aio_pika, `typing.py` → typing)."""
        path = self.file
        if path.startswith("/"):
            parts = path.split("/")
            installed = [
                i
                for i, part in enumerate(parts[:-1])
                if part == "site-packages" or (part.startswith("python3") and parts[i - 1] == "lib")
            ]
            if installed:
                path = "/".join(parts[installed[-1] + 1 :])
            elif mine := [part for part in parts[:-1] if part.startswith("parley")]:
                return mine[-1]
        first = path.split("/", 1)[0]
        return first.removesuffix(".py") if first else "?"

    @property
    def is_parley(self) -> bool:
        """Parley's code, but not a service's `__main__` (below which runs the whole event loop)."""
        return self.library.startswith("parley") and not self.file.endswith("__main__.py")


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "?")
    return Frame(match["function"], match["file"])


def _below_loop(frames: list[Frame]) -> int:
    """Where the frames the event loop called begin: after its last dispatch frame (asyncio's
    `_run_once` or `Handle._run`; with uvloop, whose loop is compiled, `Runner.run` or
    `run_until_complete`), so that the code that started the loop (a service's `main`) is not
    charged with everything the loop runs. 0 when no loop is on the stack."""
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        if frame.library == "asyncio" and frame.function.endswith(_LOOP_FRAMES):
            return i + 1
    return 0


def parse_raw(text: str) -> list[tuple[list[Frame], int]]:
    """The stacks (root first) and their sample counts."""
    stacks = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";") if f], int(count)))
    return stacks


def is_wait(leaf: Frame) -> bool:
    """A sample stopped where a thread waits: the event loop's selector, or a thread pool's worker
    on its queue. py-spy (--nonblocking) keeps only threads the OS shows running or runnable, so
    these are threads woken and waiting for a CPU on a busy machine, not work of their own."""
    return (leaf.library == "selectors" and leaf.function.endswith(".select")) or (
        leaf.library == "concurrent" and leaf.function == "_worker"
    )


def summarise(stacks: list[tuple[list[Frame], int]], top: int = 5) -> dict[str, Any]:
    """Samples, the share of them at a wait (`is_wait`), and the `top` costs three ways among
    the others, each as (name, share of those samples)."""
    waits = sum(count for frames, count in stacks if frames and is_wait(frames[-1]))
    total = sum(count for _, count in stacks) - waits
    libraries: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    parley: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames or is_wait(frames[-1]):
            continue
        leaf = frames[-1]
        libraries[leaf.library] += count
        functions[f"{leaf.library}: {leaf.function}"] += count
        mine = next((f for f in reversed(frames[_below_loop(frames) :]) if f.is_parley), None)
        parley[f"{mine.library}: {mine.function}" if mine else NO_PARLEY_FRAME] += count

    def best(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "wait_samples": waits,
        "by_library": best(libraries),
        "by_function": best(functions),
        "by_parley_frame": best(parley),
    }
