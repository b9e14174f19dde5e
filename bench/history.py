"""The embedded history store (SQLite): append and page-read latency, and throughput.

Measured on the store itself, in-process, as the history service drives it: each call goes
through the store's single SQLite thread, with `synchronous=FULL` (the service's default: a
commit is on disk before its event is acked) and NORMAL for comparison. Appends one by one
(latency) and from 32 concurrent writers (throughput); reads of the default page (the newest
50), of older pages by cursor, and of sync pages.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from parley_history.sqlite_store import SqliteHistoryStore

from .stats import summary_ms, write

USER = "bench"
SEQUENTIAL_APPENDS = 1000
CONCURRENT_APPENDS = 2000
CONCURRENCY = 32
CONVERSATION_MESSAGES = 1000
READS = 500
CONTENT = "How does Parley keep the history of a conversation? " * 8  # ~420 bytes, a typical message


async def _timed(calls: int, call: Any) -> list[float]:
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - start)
    return latencies


async def measure(synchronous: str, workdir: Path) -> dict[str, Any]:
    store = SqliteHistoryStore(workdir / f"history-{synchronous.lower()}.sqlite3", synchronous)
    try:
        now = int(time.time() * 1000)
        await store.create_conversation(USER, "c_seq", "sequential", now)

        async def append(i: int) -> None:
            await store.append_message(USER, "c_seq", f"m{i:06d}", "user", CONTENT, now + i)

        append_latency = await _timed(SEQUENTIAL_APPENDS, append)

        conversations = [f"c_par{i}" for i in range(CONCURRENCY)]
        for cid in conversations:
            await store.create_conversation(USER, cid, "concurrent", now)
        per_writer = CONCURRENT_APPENDS // CONCURRENCY

        async def writer(cid: str) -> None:
            for i in range(per_writer):
                await store.append_message(USER, cid, f"m{i:06d}", "user", CONTENT, now + i)

        start = time.perf_counter()
        await asyncio.gather(*(writer(cid) for cid in conversations))
        append_rate = per_writer * CONCURRENCY / (time.perf_counter() - start)

        cursors: list[str] = []
        cursor = ""
        while True:
            _, cursor = await store.get_messages(USER, "c_seq", cursor, 50)
            if not cursor:
                break
            cursors.append(cursor)

        async def newest_page(_: int) -> None:
            page, _ = await store.get_messages(USER, "c_seq", "", 0)
            assert len(page) == 50

        async def older_page(i: int) -> None:
            page, _ = await store.get_messages(USER, "c_seq", cursors[i % len(cursors)], 50)
            assert page

        sync_cursors = [""]
        while True:
            result = await store.sync(USER, sync_cursors[-1], 100)
            if not result.has_more:
                break
            sync_cursors.append(result.next_cursor)

        async def sync_page(i: int) -> None:
            assert (await store.sync(USER, sync_cursors[i % len(sync_cursors)], 100)).changes

        newest_latency = await _timed(READS, newest_page)
        older_latency = await _timed(READS, older_page)
        sync_latency = await _timed(READS, sync_page)
        start = time.perf_counter()
        await asyncio.gather(*(newest_page(i) for i in range(READS)))
        read_rate = READS / (time.perf_counter() - start)
    finally:
        await store.close()
    return {
        "synchronous": synchronous,
        "append_ms": summary_ms(append_latency),
        "appends_per_s_concurrent": round(append_rate),
        "newest_page_ms": summary_ms(newest_latency),
        "older_page_ms": summary_ms(older_latency),
        "sync_page_100_ms": summary_ms(sync_latency),
        "newest_pages_per_s_concurrent": round(read_rate),
    }


def _print(run: dict[str, Any]) -> None:
    def ms(name: str) -> str:
        s = run[name]
        return f"p50 {s['p50']:6.2f} p99 {s['p99']:6.2f} ms"

    print(
        f"history sqlite synchronous={run['synchronous']:6} append {ms('append_ms')} | "
        f"{run['appends_per_s_concurrent']:5d} appends/s at c={CONCURRENCY} | newest 50 {ms('newest_page_ms')} | "
        f"older 50 {ms('older_page_ms')} | sync 100 {ms('sync_page_100_ms')} | "
        f"{run['newest_pages_per_s_concurrent']:5d} pages/s",
        flush=True,
    )


async def main() -> None:
    runs = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-history-") as tmp:
        for synchronous in ("FULL", "NORMAL"):
            run = await measure(synchronous, Path(tmp))
            _print(run)
            runs.append(run)
    path = write(
        "history",
        {
            "store": "sqlite",
            "message_bytes": len(CONTENT),
            "sequential_appends": SEQUENTIAL_APPENDS,
            "concurrent_appends": CONCURRENT_APPENDS,
            "concurrency": CONCURRENCY,
            "reads": READS,
            "runs": runs,
        },
    )
    print(f"wrote {path}")
