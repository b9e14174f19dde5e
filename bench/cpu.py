"""CPU time of processes read from /proc: one process, a process and its descendants, and the
shared servers found by the port they listen on (RabbitMQ and Redis serve every run on this
machine, so they are told apart from the side being measured)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    ppid: int
    utime: int  # clock ticks, every thread of the process
    stime: int

    @property
    def cpu_ms(self) -> float:
        return (self.utime + self.stime) * 1000 / CLK_TCK


def parse_stat(text: str) -> ProcStat:
    """One /proc/<pid>/stat line. `comm` may hold spaces and parentheses: it ends at the last ')'."""
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = rest.split()
    # After comm: state (field 3), ppid (4), … utime (14), stime (15).
    return ProcStat(int(pid), comm, int(fields[1]), int(fields[11]), int(fields[12]))


def read_stat(pid: int) -> ProcStat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None  # gone


def all_stats() -> list[ProcStat]:
    stats = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            stats.append(stat)
    return stats


def tree(root: int, stats: Iterable[ProcStat] | None = None) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in all_stats() if stats is None else stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def listening_inodes(port: int, tables: Mapping[str, str] | None = None) -> set[str]:
    """Socket inodes listening on `port` (any address), from /proc/net/tcp and tcp6."""
    if tables is None:
        tables = {}
        for name in ("tcp", "tcp6"):
            try:
                tables[name] = (PROC / "net" / name).read_text()
            except OSError:
                pass
    inodes = set()
    for text in tables.values():
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def pid_listening_on(port: int) -> int | None:
    """The process that listens on a TCP port on this machine (root sees every process's fds)."""
    inodes = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    if not inodes:
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


class CpuMeter:
    """CPU milliseconds of named groups of processes between two readings. A group is a list of
    pids, or a root pid whose whole tree (resolved at each reading) counts."""

    def __init__(self, groups: Mapping[str, list[int]], trees: Mapping[str, int] | None = None) -> None:
        self.groups = dict(groups)
        self.trees = dict(trees or {})

    def read(self) -> dict[str, float]:
        stats = {s.pid: s for s in all_stats()}
        out = {}
        for name, pids in self.groups.items():
            out[name] = sum(stats[p].cpu_ms for p in pids if p in stats)
        for name, root in self.trees.items():
            out[name] = sum(stats[p].cpu_ms for p in tree(root, stats.values()) if p in stats)
        return out


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}
