"""The history stores, SQLite and Cassandra, side by side: append and page-read latency, and throughput.

Measured on each store itself, in-process, as the history service drives it, with the same
calls and the same message content in one run: appends one by one (latency) and from 32
concurrent writers (throughput); reads of the default page (the newest 50), of older pages by
cursor, and of sync pages. Cassandra / SQLite (FULL) ratios of every latency come from that run.

SQLite: each call goes through the store's single SQLite thread, with `synchronous=FULL` (the
service's default: a commit is on disk before its event is acked) and NORMAL for comparison.
Measured first, before the Cassandra node starts, so that this run's node does not compete
with it for the CPUs.

Cassandra: one node on loopback, started for the run by `parley_dev.cassandra.provide_cassandra`
(or the cluster CASSANDRA_CONTACT_POINTS names), with `durable=True`: the fsync behaviour of a
production-like node — system tables fsynced, and the commit log synced periodically (every
10 s: a write is acked once it is in the commit log's memory-mapped segment, as with
Cassandra's default `commitlog_sync: periodic`), not the test setting that skips fsyncs. The
store runs LOCAL_QUORUM with a replication factor of 1, in a keyspace of this run's own,
migrated first and dropped at the end. The node is a fresh JVM: an unmeasured warm-up (another
user's appends and reads) comes first, so that JIT compilation is not counted as store latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from parley_dev.cassandra import CassandraEndpoint, provide_cassandra
from parley_history.cassandra_migrations import migrate
from parley_history.cassandra_session import CassandraConfig, CassandraSession
from parley_history.cassandra_store import CassandraHistoryStore
from parley_history.settings import HistorySettings
from parley_history.sqlite_store import SqliteHistoryStore
from parley_history.store import HistoryStore

from .stats import summary_ms, write

USER = "bench"
WARMUP_USER = "bench_warmup"
SEQUENTIAL_APPENDS = 1000
CONCURRENT_APPENDS = 2000
CONCURRENCY = 32
CONVERSATION_MESSAGES = 1000
READS = 500
# Sync pages timed one by one (on both stores): fewer than READS, as a Cassandra sync page of 100
# fetches each change's message (~50 ms here) and the run is to stay under two minutes.
SYNC_READS = 200
WARMUP_CALLS = 300  # Cassandra only: appends, then newest pages, then sync pages, none of them measured
CONTENT = "How does Parley keep the history of a conversation? " * 8  # ~420 bytes, a typical message
# The service's own partition span (PARLEY_HISTORY_BUCKET_S): every message here lands in one bucket.
BUCKET_MS = HistorySettings.model_fields["history_bucket_s"].default * 1000
LATENCIES = ("append_ms", "newest_page_ms", "older_page_ms", "sync_page_100_ms")


async def _timed(calls: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        await call(i)
        latencies.append(time.perf_counter() - start)
    return latencies


async def _measure(store: HistoryStore) -> dict[str, Any]:
    """The same calls, in the same order, on either store."""
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
    sync_latency = await _timed(SYNC_READS, sync_page)
    start = time.perf_counter()
    await asyncio.gather(*(newest_page(i) for i in range(READS)))
    read_rate = READS / (time.perf_counter() - start)
    return {
        "append_ms": summary_ms(append_latency),
        "appends_per_s_concurrent": round(append_rate),
        "newest_page_ms": summary_ms(newest_latency),
        "older_page_ms": summary_ms(older_latency),
        "sync_page_100_ms": summary_ms(sync_latency),
        "newest_pages_per_s_concurrent": round(read_rate),
    }


async def measure(synchronous: str, workdir: Path) -> dict[str, Any]:
    store = SqliteHistoryStore(workdir / f"history-{synchronous.lower()}.sqlite3", synchronous)
    try:
        return {"store": "sqlite", "synchronous": synchronous, **await _measure(store)}
    finally:
        await store.close()


async def _warm_up(store: HistoryStore) -> None:
    """Unmeasured calls of every kind, as another user, so the JVM has compiled its hot paths."""
    now = int(time.time() * 1000)
    await store.create_conversation(WARMUP_USER, "c_warm", "warm-up", now)
    for i in range(WARMUP_CALLS):
        await store.append_message(WARMUP_USER, "c_warm", f"m{i:06d}", "user", CONTENT, now + i)
    for _ in range(WARMUP_CALLS):
        await store.get_messages(WARMUP_USER, "c_warm", "", 0)
    for _ in range(WARMUP_CALLS // 10):
        await store.sync(WARMUP_USER, "", 100)


async def measure_cassandra(endpoint: CassandraEndpoint) -> dict[str, Any]:
    # Generous timeouts: schema changes on a durable node take seconds; queries take ~1 ms.
    config = CassandraConfig(
        contact_points=endpoint.contact_points,
        local_dc=endpoint.local_dc,
        request_timeout_s=20.0,
        connect_timeout_s=20.0,
    )
    keyspace = "bench_history_" + uuid.uuid4().hex[:12]
    start = time.perf_counter()
    admin = await CassandraSession.connect(config)
    try:
        version = (await admin.execute("SELECT release_version FROM system.local"))[0]["release_version"]
        await migrate(admin, keyspace=keyspace, local_dc=config.local_dc, replication_factor=1)
        migrate_s = time.perf_counter() - start
        session = await CassandraSession.connect(config, keyspace=keyspace)
        # settle_ms=0: sync then serves every change already written. The service holds back
        # changes younger than its settle window (PARLEY_HISTORY_SYNC_SETTLE_MS; by default the
        # request timeout plus the clock skew) for writes still in flight; this measures the
        # read path, not that deliberate delay (the newest pages would be empty with it).
        store = await CassandraHistoryStore.open(session, bucket_ms=BUCKET_MS, settle_ms=0)
        try:
            await _warm_up(store)
            measured = await _measure(store)
        finally:
            await store.close()
    finally:
        try:
            await admin.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        finally:
            await admin.close()
    return {
        "store": "cassandra",
        "cassandra_version": version,
        "source": endpoint.source,
        # A node this run started (periodic commit log either way); None: a cluster named by the environment.
        "durable": endpoint.local.durable if endpoint.local is not None else None,
        "replication_factor": 1,
        "bucket_ms": BUCKET_MS,
        "settle_ms": 0,
        "warmup_calls": WARMUP_CALLS,
        "migrate_s": round(migrate_s, 1),
        **measured,
    }


def ratios(cassandra: dict[str, Any], sqlite_full: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Cassandra latency / SQLite (FULL) latency, per percentile, from the same run."""
    return {
        name: {p: round(cassandra[name][p] / sqlite_full[name][p], 1) for p in ("p50", "p99")} for name in LATENCIES
    }


def _print(label: str, run: dict[str, Any]) -> None:
    def ms(name: str) -> str:
        s = run[name]
        return f"p50 {s['p50']:6.2f} p99 {s['p99']:6.2f} ms"

    print(
        f"history {label:25} append {ms('append_ms')} | "
        f"{run['appends_per_s_concurrent']:5d} appends/s at c={CONCURRENCY} | newest 50 {ms('newest_page_ms')} | "
        f"older 50 {ms('older_page_ms')} | sync 100 {ms('sync_page_100_ms')} | "
        f"{run['newest_pages_per_s_concurrent']:5d} pages/s",
        flush=True,
    )


async def main() -> None:
    started = time.perf_counter()
    # Other work on the machine shows in every number here: recorded with them.
    load_at_start = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-history-") as tmp:
        for synchronous in ("FULL", "NORMAL"):
            run = await measure(synchronous, Path(tmp))
            _print(f"sqlite synchronous={synchronous}", run)
            runs.append(run)
        with contextlib.ExitStack() as stack:
            # ~15 s for a local node to start; blocking, so off the event loop.
            start = time.perf_counter()
            endpoint = await asyncio.to_thread(
                stack.enter_context,
                provide_cassandra(Path(tmp) / "cassandra", prefer_containers=False, durable=True),
            )
            node_start_s = time.perf_counter() - start
            cassandra = await measure_cassandra(endpoint)
            cassandra["node_start_s"] = round(node_start_s, 1)
            _print(f"cassandra {cassandra['cassandra_version']} ({endpoint.source})", cassandra)
            await asyncio.to_thread(stack.close)
    versus = ratios(cassandra, runs[0])
    print(
        "history cassandra / sqlite FULL: "
        + " | ".join(f"{name.removesuffix('_ms')} p50 {r['p50']}x p99 {r['p99']}x" for name, r in versus.items()),
        flush=True,
    )
    path = write(
        "history",
        {
            "stores": ["sqlite", "cassandra"],
            "message_bytes": len(CONTENT),
            "sequential_appends": SEQUENTIAL_APPENDS,
            "concurrent_appends": CONCURRENT_APPENDS,
            "concurrency": CONCURRENCY,
            "reads": READS,
            "sync_reads": SYNC_READS,
            "runs": runs,
            "cassandra": cassandra,
            "cassandra_vs_sqlite_full": versus,
            "duration_s": round(time.perf_counter() - started, 1),
            "load_avg_1m": {"start": round(load_at_start, 2), "end": round(os.getloadavg()[0], 2)},
        },
    )
    print(f"wrote {path}")
