"""Conversation search on both stores: what a search costs when it finds its hits at once, and
when it finds nothing and reads up to its caps (search.py: 500 conversations, 5,000 messages).

One user with CONVERSATIONS conversations of TURNS turns each (a ~200-character question, a
~1,500-character answer), more messages than the cap, on each store in-process as the history
service drives it. Cassandra: the node CASSANDRA_CONTACT_POINTS names, else one started for
the run (`parley_dev.cassandra.provide_cassandra`), in a keyspace of the run's own, dropped at
the end. Run alone: `.venv/bin/python -m bench.search` (writes bench/results/search.json).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from parley_dev.cassandra import provide_cassandra
from parley_history.cassandra_migrations import migrate
from parley_history.cassandra_session import CassandraConfig, CassandraSession
from parley_history.cassandra_store import CassandraHistoryStore
from parley_history.search import DEFAULT_SEARCH_CAPS
from parley_history.sqlite_store import SqliteHistoryStore
from parley_history.store import HistoryStore

from .stats import summary_ms, write

USER = "bench_search"
CONVERSATIONS = 1_000
TURNS = 3  # 6,000 messages, and more conversations than the cap
RUNS = 20
QUESTION = "Could you explain how the history of a chat is kept and found again later? " * 3
ANSWER = "History is kept per conversation, newest first, in time-bucketed partitions. " * 20
QUERIES = {
    # In the newest conversations' last answers: a full page of hits at once.
    "recent_hits": "marmalade",
    # In every title: hits without reading a message.
    "title_hits": "topic",
    # Nowhere: the whole budget is read.
    "no_hit": "zanzibar",
}


async def _fill(store: HistoryStore, writers: int) -> None:
    now = int(time.time() * 1000) - 10 * 86_400_000
    gate = asyncio.Semaphore(writers)

    async def conversation(c: int) -> None:
        async with gate:
            at = now + c * 60_000
            cid = f"c{c:05d}"
            await store.create_conversation(USER, cid, f"topic {c}", at)
            for t in range(TURNS):
                await store.append_message(USER, cid, f"q{t}", "user", QUESTION, at + 2 * t + 1)
                # The 20 newest conversations' last answers hold the "recent" word.
                tail = " marmalade" if c >= CONVERSATIONS - 20 and t == TURNS - 1 else ""
                await store.append_message(USER, cid, f"a{t}", "assistant", ANSWER + tail, at + 2 * t + 2)

    await asyncio.gather(*(conversation(c) for c in range(CONVERSATIONS)))


async def _measure(store: HistoryStore) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, query in QUERIES.items():
        hits = await store.search_conversations(USER, query, 20)  # warm-up, unmeasured
        latencies = []
        for _ in range(RUNS):
            start = time.perf_counter()
            await store.search_conversations(USER, query, 20)
            latencies.append(time.perf_counter() - start)
        results[name] = {"hits": len(hits), **summary_ms(latencies)}
        print(f"  {name}: {len(hits)} hits, {results[name]}", flush=True)
    return results


async def _sqlite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteHistoryStore(Path(tmp) / "history.sqlite3")
        try:
            await _fill(store, writers=1)
            return await _measure(store)
        finally:
            await store.close()


async def _cassandra() -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(provide_cassandra(Path(tempfile.mkdtemp()), durable=True))
        config = CassandraConfig(contact_points=endpoint.contact_points, local_dc=endpoint.local_dc)
        keyspace = "bench_search_" + uuid.uuid4().hex[:8]
        admin = await CassandraSession.connect(config)
        try:
            await migrate(admin, keyspace, endpoint.local_dc, replication_factor=1)
            session = await CassandraSession.connect(config, keyspace)
            store = await CassandraHistoryStore.open(session, bucket_ms=7 * 86_400_000, settle_ms=8_000)
            try:
                await _fill(store, writers=32)
                return await _measure(store)
            finally:
                await store.close()
        finally:
            await admin.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
            await admin.close()


async def main() -> None:
    caps = DEFAULT_SEARCH_CAPS
    print(f"search: {CONVERSATIONS} conversations x {2 * TURNS} messages; caps {caps}", flush=True)
    print(" sqlite", flush=True)
    sqlite = await _sqlite()
    print(" cassandra", flush=True)
    cassandra = await _cassandra()
    write(
        "search",
        {
            "conversations": CONVERSATIONS,
            "messages": CONVERSATIONS * TURNS * 2,
            "caps": {"conversations": caps.conversations, "messages": caps.messages, "characters": caps.characters},
            "sqlite": sqlite,
            "cassandra": cassandra,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
