"""Memory profiling of a service process, from outside its code: with this directory on a
process's PYTHONPATH and BENCH_TRACEMALLOC_DIR set, the interpreter imports this module at
start, which starts tracemalloc (BENCH_TRACEMALLOC_FRAMES frames per allocation, 1 by default)
and, on every SIGUSR2, writes `snapshot-<n>.pickle` (tracemalloc.Snapshot.dump) and then
`snapshot-<n>.json` (the process's RSS, tracemalloc's own memory and the traced total at that
moment) to that directory. `bench streams` puts it on the gateway's path in profile mode only.
"""

import json
import os
import signal
import tracemalloc

_DIR = os.environ.get("BENCH_TRACEMALLOC_DIR")


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _dump(directory: str) -> None:
    count = [0]

    def on_signal(signum: int, frame: object) -> None:
        n = count[0]
        count[0] += 1
        rss_kb = _rss_kb()
        traced, traced_peak = tracemalloc.get_traced_memory()
        overhead = tracemalloc.get_tracemalloc_memory()
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(os.path.join(directory, f"snapshot-{n}.pickle"))
        meta = {
            "rss_kb": rss_kb,
            "traced_bytes": traced,
            "traced_peak_bytes": traced_peak,
            "tracemalloc_bytes": overhead,
        }
        tmp = os.path.join(directory, f"snapshot-{n}.json.tmp")
        with open(tmp, "w") as out:
            json.dump(meta, out)
        # The .json appears only once the snapshot is complete.
        os.replace(tmp, os.path.join(directory, f"snapshot-{n}.json"))

    signal.signal(signal.SIGUSR2, on_signal)


if _DIR:
    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    _dump(_DIR)
