"""What only a real Cassandra node can show about the Cassandra store: migrations run from many
replicas at once and upgrade an old keyspace; the first answer stays the one kept whatever
the order writes land in; no tombstones where none are needed; results of any length; the
errors a caller may retry and those it may not; sync that a lagging clock cannot fool."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT
from cassandra.query import UNSET_VALUE, BatchStatement, BatchType, SimpleStatement

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import Gone
from parley_dev.cassandra import CassandraEndpoint
from parley_history.cassandra_migrations import load_migrations, migrate, pending_migrations, table_id
from parley_history.cassandra_session import CassandraSession, StoreFailure
from parley_history.cassandra_store import CassandraHistoryStore
from parley_history.store import MAX_PAGE_BYTES
from tests.support.history_stores import BUCKET_MS, CassandraTarget, TestClock, config_for, open_cassandra_store

pytestmark = pytest.mark.usefixtures("cassandra")


@pytest.fixture
async def admin(cassandra: CassandraEndpoint) -> AsyncIterator[CassandraSession]:
    session = await CassandraSession.connect(config_for(cassandra))
    yield session
    await session.close()


def fresh_keyspace() -> str:
    return "mig_" + uuid.uuid4().hex[:12]


async def table_ids(session: CassandraSession, keyspace: str) -> dict[str, uuid.UUID]:
    rows = await session.execute(
        "SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
    )
    return {r["table_name"]: r["id"] for r in rows}


async def drop(session: CassandraSession, keyspace: str) -> None:
    await session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


async def test_migrations_run_once_from_many_replicas_at_once(cassandra: CassandraEndpoint) -> None:
    keyspace = fresh_keyspace()
    sessions = [await CassandraSession.connect(config_for(cassandra)) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(s, keyspace, cassandra.local_dc, 1) for s in sessions))
        everything = [m.version for m in load_migrations()]
        assert sorted(applied, key=len) == [[], [], everything], "one runner applied all; the others waited"
        ids = await table_ids(sessions[0], keyspace)
        assert {name: ids[name] for name in ids} == {name: table_id(keyspace, name) for name in ids}
        rows = await sessions[0].execute(f"SELECT version FROM {keyspace}.schema_migrations")
        assert sorted(r["version"] for r in rows) == everything
        assert await sessions[0].execute(f"SELECT * FROM {keyspace}.schema_lock") == [], "the lock is released"
    finally:
        await drop(sessions[0], keyspace)
        for s in sessions:
            await s.close()


async def test_a_keyspace_made_by_the_first_migration_is_brought_forward(
    admin: CassandraSession, cassandra: CassandraEndpoint
) -> None:
    keyspace = fresh_keyspace()
    everything = load_migrations()
    try:
        assert await migrate(admin, keyspace, cassandra.local_dc, 1, migrations=everything[:1]) == [1]
        assert [m.version for m in await pending_migrations(admin, keyspace)] == [m.version for m in everything[1:]]
        assert await migrate(admin, keyspace, cassandra.local_dc, 1) == [m.version for m in everything[1:]]
        assert await migrate(admin, keyspace, cassandra.local_dc, 1) == [], "a current keyspace is left alone"
        ids = await table_ids(admin, keyspace)
        assert {"conversations", "messages_by_bucket", "message_claims", "changes_by_user"} <= set(ids)
        columns = await admin.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s AND table_name = 'conversations'",
            (keyspace,),
        )
        assert "listed_at_ms" in {c["column_name"] for c in columns}
        # The store opens on it and works.
        session = await CassandraSession.connect(config_for(cassandra), keyspace)
        store = await CassandraHistoryStore.open(session, bucket_ms=BUCKET_MS, settle_ms=0)
        try:
            await store.create_conversation("u", "c", "t", 1000)
            await store.append_message("u", "c", "m", "user", "hello", 1001)
            assert [m.id for m in (await store.get_messages("u", "c", "", 10))[0]] == ["m"]
        finally:
            await store.close()
    finally:
        await drop(admin, keyspace)


async def test_a_lock_left_by_a_dead_runner_expires(admin: CassandraSession, cassandra: CassandraEndpoint) -> None:
    keyspace = fresh_keyspace()
    try:
        assert await migrate(admin, keyspace, cassandra.local_dc, 1, migrations=load_migrations()[:1]) == [1]
        # A runner took the lock and died: its lease has a TTL.
        await admin.execute(
            f"INSERT INTO {keyspace}.schema_lock (name, owner, since) VALUES ('migrations', 'dead', %s) USING TTL 3",
            (datetime.now(UTC),),
        )
        started = time.monotonic()
        applied = await migrate(admin, keyspace, cassandra.local_dc, 1, lock_wait_s=30)
        assert applied == [m.version for m in load_migrations()[1:]]
        assert time.monotonic() - started >= 1.5, "it waited for the dead runner's lease"
    finally:
        await drop(admin, keyspace)


def test_the_migrate_command_on_cassandra_can_run_again(cassandra: CassandraEndpoint) -> None:
    keyspace = fresh_keyspace()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")} | cassandra.env(keyspace)
    try:
        for _ in range(2):
            done = subprocess.run(
                [sys.executable, "-m", "parley_history", "migrate"], env=env, capture_output=True, timeout=180
            )
            assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert b'"applied": []' in done.stderr + done.stdout, "the second run found nothing to do"
    finally:
        asyncio.run(_drop_with_new_session(cassandra, keyspace))


async def _drop_with_new_session(cassandra: CassandraEndpoint, keyspace: str) -> None:
    session = await CassandraSession.connect(config_for(cassandra))
    try:
        await drop(session, keyspace)
    finally:
        await session.close()


@pytest.fixture
async def cstore(cassandra_target: CassandraTarget, clock: TestClock) -> AsyncIterator[CassandraHistoryStore]:
    """The Cassandra store on the contract keyspace."""
    store = await open_cassandra_store(cassandra_target, clock)
    yield store
    await store.close()


async def claimers_write(store: CassandraHistoryStore, cid: str, mid: str, bucket: int, claimed_at: int) -> None:
    """The claimer's own write of its answer, as _store_message makes it."""
    await store._run(
        "message_insert", cid, bucket, claimed_at, mid, "assistant", "the first answer", 1, "m", "",
        1, 2, 0, "", UNSET_VALUE, "stop", claimed_at * 1000 + 1,
    )  # fmt: skip


async def test_the_claimers_answer_is_kept_whichever_write_lands_last(cstore: CassandraHistoryStore) -> None:
    ns = uuid.uuid4().hex[:8]
    user, cid = f"u-{ns}", f"c-{ns}"
    await cstore.create_conversation(user, cid, "", 1_000)
    for order in ("claimer last", "claimer first"):
        mid = f"r-{order[8:]}-{ns}"
        # The first writer claimed the answer's id and is slow to write it.
        claimed_at = 2_000
        bucket = claimed_at - claimed_at % BUCKET_MS
        await cstore._run("message_claim", cid, mid, bucket, claimed_at)

        if order == "claimer first":
            await claimers_write(cstore, cid, mid, bucket, claimed_at)
        # A redelivery sees the claim not yet recorded, and finishes the write with its content.
        stored = await cstore.complete_message(
            user,
            cid,
            mid,
            "",
            "a redelivered answer",
            history_pb2.MESSAGE_STATUS_COMPLETE,
            "m",
            chat_pb2.Usage(),
            9_000,
        )
        if order == "claimer last":
            assert stored.content == "a redelivered answer", "the claimer had not written: the finisher's row stands"
            await claimers_write(cstore, cid, mid, bucket, claimed_at)
        messages, _ = await cstore.get_messages(user, cid, "", 50)
        kept = [m for m in messages if m.id == mid]
        assert len(kept) == 1 and kept[0].content == "the first answer", order
        assert kept[0].created_at_ms == claimed_at, "the claim fixed its place"


async def tombstones_read(session: CassandraSession, cql: str, params: tuple[object, ...]) -> int:
    result = await asyncio.to_thread(session.session.execute, SimpleStatement(cql), params, trace=True)
    trace = await asyncio.to_thread(result.get_query_trace, 10.0)
    counts = [
        int(event.description.split(" and ")[1].split()[0])
        for event in trace.events
        if "tombstone cells" in event.description and event.description.startswith("Read ")
    ]
    assert counts, [e.description for e in trace.events]
    return sum(counts)


async def test_a_busy_conversation_leaves_no_tombstones_in_the_list_or_the_change_log(
    cstore: CassandraHistoryStore, cassandra_target: CassandraTarget
) -> None:
    ns = uuid.uuid4().hex[:8]
    user = f"busy-{ns}"
    await cstore.create_conversation(user, f"other-{ns}", "", 1_000)
    await cstore.create_conversation(user, f"c-{ns}", "", 1_001)
    # Forty turns in the conversation at the top of the list: it never has to move.
    for i in range(40):
        await cstore.append_message(user, f"c-{ns}", f"q{i}", "user", "question", 2_000 + 10 * i)
        await cstore.complete_message(
            user, f"c-{ns}", f"a{i}", f"q{i}", "answer", history_pb2.MESSAGE_STATUS_COMPLETE, "m", chat_pb2.Usage(),
            2_005 + 10 * i,
        )  # fmt: skip
    listed, _ = await cstore.list_conversations(user, "", 10)
    assert [c.id for c in listed] == [f"c-{ns}", f"other-{ns}"] and listed[0].updated_at_ms == 2_395
    ks = cassandra_target.keyspace
    assert (
        await tombstones_read(cstore.db, f"SELECT * FROM {ks}.conversations_by_user WHERE user_id = %s", (user,)) == 0
    )
    # Switching to the other conversation moves it to the top: one tombstone, one move.
    await cstore.append_message(user, f"other-{ns}", "o1", "user", "back here", 5_000)
    assert [c.id for c in (await cstore.list_conversations(user, "", 10))[0]] == [f"other-{ns}", f"c-{ns}"]
    assert (
        await tombstones_read(cstore.db, f"SELECT * FROM {ks}.conversations_by_user WHERE user_id = %s", (user,)) == 1
    )
    # Conversation changes have no message key: it is left unset, not written as null.
    buckets = {b for b in range(0, 6_000, BUCKET_MS)}
    total = 0
    for bucket in buckets:
        total += await tombstones_read(
            cstore.db, f"SELECT * FROM {ks}.changes_by_user WHERE user_id = %s AND bucket_ms = %s", (user, bucket)
        )
    assert total == 0


async def test_a_query_returns_every_page_of_its_result(
    cstore: CassandraHistoryStore, cassandra_target: CassandraTarget
) -> None:
    ns = uuid.uuid4().hex[:8]
    await cstore.create_conversation(f"u-{ns}", f"c-{ns}", "", 1_000)
    for i in range(25):
        await cstore.append_message(f"u-{ns}", f"c-{ns}", f"m{i:02d}", "user", "x", 1_001 + i)
    statement = SimpleStatement(
        f"SELECT message_id FROM {cassandra_target.keyspace}.messages_by_bucket WHERE conversation_id = %s"
        " AND bucket_ms = %s",
        fetch_size=4,
    )
    rows = await cstore.db.execute(statement, (f"c-{ns}", 1_000))
    assert sorted(r["message_id"] for r in rows) == [f"m{i:02d}" for i in range(25)]


async def test_a_page_of_large_messages_stays_under_the_grpc_limit(cstore: CassandraHistoryStore) -> None:
    ns = uuid.uuid4().hex[:8]
    user, cid = f"u-{ns}", f"c-{ns}"
    await cstore.create_conversation(user, cid, "", 1_000)
    big = "x" * (900 * 1024)
    for i in range(8):
        await cstore.append_message(user, cid, f"m{i}", "user", big, 1_001 + i)
    seen: list[str] = []
    cursor = ""
    while True:
        page, cursor = await cstore.get_messages(user, cid, cursor, 200)
        assert sum(m.ByteSize() for m in page) <= MAX_PAGE_BYTES and page
        seen += [m.id for m in page]
        if not cursor:
            break
    assert seen == [f"m{i}" for i in range(7, -1, -1)], "every message once, newest first"
    changes, pages, since = [], 0, ""
    while True:
        synced = await cstore.sync(user, since, 200)
        assert sum(c.ByteSize() for c in synced.changes) <= MAX_PAGE_BYTES + 1024
        changes += synced.changes
        since, pages = synced.next_cursor, pages + 1
        if not synced.has_more:
            break
    assert pages >= 3 and [c.message.id for c in changes if c.message.id] == [f"m{i}" for i in range(8)]


async def test_a_read_that_fails_on_the_replica_is_not_retried_as_unavailable(
    cstore: CassandraHistoryStore, cassandra_target: CassandraTarget
) -> None:
    """A read through more tombstones than the node allows fails on the replica, and would fail
    again: it is a store failure, not the retryable store_unavailable."""
    ks = cassandra_target.keyspace
    db = cstore.db
    setting = await db.execute("SELECT value FROM system_views.settings WHERE name = 'tombstone_failure_threshold'")
    threshold = int(setting[0]["value"])
    await db.execute(f"CREATE TABLE IF NOT EXISTS {ks}.graveyard (k text, c int, PRIMARY KEY (k, c))", timeout=60)
    delete = await db.prepare(f"DELETE FROM {ks}.graveyard WHERE k = 'dead' AND c = ?")
    for start in range(0, threshold + 1, 500):
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for c in range(start, min(start + 500, threshold + 1)):
            batch.add(delete, (c,))
        await asyncio.to_thread(db.session.execute, batch)
    with pytest.raises(StoreFailure) as raised:
        await db.execute(f"SELECT * FROM {ks}.graveyard WHERE k = 'dead'")
    assert raised.value.code == "store_failure"


@pytest.mark.parametrize(("settle_ms", "missed"), [(0, True), (1_000, False)])
async def test_sync_does_not_miss_a_change_from_a_clock_behind_within_the_settle_window(
    cassandra_target: CassandraTarget, settle_ms: int, missed: bool
) -> None:
    """A writer whose clock is 800 ms behind the reader's: with a settle window longer than the
    skew, its change is served; with none, the reader's cursor has already passed it."""
    ns = uuid.uuid4().hex[:8]
    user = f"skew-{ns}"
    real = TestClock(1_800_000_000_000)
    sessions = [await CassandraSession.connect(cassandra_target.config, cassandra_target.keyspace) for _ in range(2)]
    reader = await CassandraHistoryStore.open(sessions[0], bucket_ms=BUCKET_MS, settle_ms=settle_ms, clock=real)
    writer = await CassandraHistoryStore.open(
        sessions[1], bucket_ms=BUCKET_MS, settle_ms=settle_ms, clock=lambda: real() - 800
    )
    try:
        await reader.create_conversation(user, f"a-{ns}", "first", 0)
        real.advance(2_000)
        first = await reader.sync(user, "", 100)
        assert [c.conversation_id for c in first.changes] == [f"a-{ns}"]
        await reader.create_conversation(user, f"b-{ns}", "second", 0)
        second = await reader.sync(user, first.next_cursor, 100)
        await writer.create_conversation(user, f"late-{ns}", "from the lagging clock", 0)
        real.advance(2_000)
        third = await reader.sync(user, second.next_cursor, 100)
        served = {c.conversation_id for c in second.changes + third.changes}
        assert (f"late-{ns}" not in served) == missed, served
        assert f"b-{ns}" in served
    finally:
        await reader.close()
        await writer.close()


async def test_an_expired_change_log_refuses_old_cursors_and_starts_devices_from_a_snapshot(
    cassandra_target: CassandraTarget,
) -> None:
    ns = uuid.uuid4().hex[:8]
    user = f"old-{ns}"
    clock = TestClock(int(time.time() * 1000))
    session = await CassandraSession.connect(cassandra_target.config, cassandra_target.keyspace)
    # Changes kept 4 s here (the TTL is real time in Cassandra); 90 days in production.
    store = await CassandraHistoryStore.open(session, bucket_ms=BUCKET_MS, settle_ms=0, clock=clock, retention_ms=4_000)
    try:
        a, b, c = f"a-{ns}", f"b-{ns}", f"c-{ns}"
        await store.create_conversation(user, a, "first title", clock.now_ms)
        await store.append_message(user, a, "q1", "user", "question", clock.now_ms + 10)
        await store.complete_message(
            user, a, "r1", "q1", "answer", history_pb2.MESSAGE_STATUS_COMPLETE, "m", chat_pb2.Usage(), clock.now_ms + 20
        )
        await store.rename_conversation(user, a, "renamed", clock.now_ms)
        await store.create_conversation(user, b, "doomed", clock.now_ms + 30)
        await store.delete_conversation(user, b, clock.now_ms + 40)
        await store.create_conversation(user, c, "second", clock.now_ms + 50)
        await store.append_message(user, c, "q2", "user", "another", clock.now_ms + 60)
        old = await store.sync(user, "", 100)
        assert len(old.changes) == 7 and not old.has_more  # the whole log while it is young (b created: deleted since)

        await asyncio.sleep(5)  # the log's changes expire
        clock.advance(5_000)
        with pytest.raises(Gone) as expired:
            await store.sync(user, old.next_cursor, 100)
        assert expired.value.code == "sync_cursor_expired" and expired.value.http_status == 410

        # A device starting from the beginning gets the state as it is now, in small pages.
        got: list[history_pb2.Change] = []
        since, pages = "", 0
        while True:
            page = await store.sync(user, since, 2)
            got += page.changes
            since, pages = page.next_cursor, pages + 1
            if not page.has_more:
                break
        assert pages >= 4
        seen = [(c.kind, c.message.id or c.conversation_id) for c in got]
        assert seen == [
            (history_pb2.CHANGE_KIND_CONVERSATION_CREATED, c),
            (history_pb2.CHANGE_KIND_MESSAGE_ADDED, "q2"),
            (history_pb2.CHANGE_KIND_CONVERSATION_CREATED, a),
            (history_pb2.CHANGE_KIND_MESSAGE_COMPLETED, "r1"),
            (history_pb2.CHANGE_KIND_MESSAGE_ADDED, "q1"),
        ], "each live conversation as it is now, latest activity first, with its messages; nothing deleted"
        assert got[2].conversation.title == "renamed" and got[3].message.content == "answer"

        # After the snapshot, the log goes on from where it began.
        await store.append_message(user, a, "q3", "user", "later", clock.now_ms + 100)
        later = await store.sync(user, since, 100)
        assert [c.message.id for c in later.changes] == ["q3"]
    finally:
        await store.close()


async def test_every_statement_reads_and_writes_at_local_quorum_and_only_the_claim_is_not_idempotent(
    cstore: CassandraHistoryStore,
) -> None:
    profile = cstore.db.cluster.profile_manager.profiles[EXEC_PROFILE_DEFAULT]
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert profile.serial_consistency_level == ConsistencyLevel.LOCAL_SERIAL
    # Every statement may be retried by the driver or sent again by a redelivery, except the
    # lightweight transactions (a message's claim, a continuation's), whose second try would
    # report "not applied".
    assert {name for name, s in cstore.q.items() if not s.is_idempotent} == {"message_claim", "continuation_claim"}
    # And a retried append is the same message, once.
    ns = uuid.uuid4().hex[:8]
    await cstore.create_conversation(f"u-{ns}", f"c-{ns}", "", 1_000)
    first, created = await cstore.append_message(f"u-{ns}", f"c-{ns}", "m", "user", "hello", 1_001)
    again, created_again = await cstore.append_message(f"u-{ns}", f"c-{ns}", "m", "user", "hello", 5_000)
    assert (created, created_again) == (True, False) and again.created_at_ms == first.created_at_ms == 1_001
    assert [m.id for m in (await cstore.get_messages(f"u-{ns}", f"c-{ns}", "", 10))[0]] == ["m"]


async def test_a_conversation_listed_before_migration_3_keeps_its_place_by_latest_activity(
    cstore: CassandraHistoryStore, cassandra_target: CassandraTarget
) -> None:
    ns = uuid.uuid4().hex[:8]
    user, old, other = f"u-{ns}", f"old-{ns}", f"other-{ns}"
    ks = cassandra_target.keyspace
    # As the store wrote it before migration 3: no listed time, its list row at its activity.
    await cstore.db.execute(
        f"INSERT INTO {ks}.conversations (conversation_id, user_id, title, created_at_ms, updated_at_ms)"
        " VALUES (%s, %s, %s, %s, %s)",
        (old, user, "old", 1_000, 5_000),
    )
    await cstore.db.execute(
        f"INSERT INTO {ks}.conversations_by_user (user_id, updated_at_ms, conversation_id) VALUES (%s, %s, %s)",
        (user, 5_000, old),
    )
    await cstore.create_conversation(user, other, "other", 4_000)
    # A late answer to an older message: the conversation stays first, at its latest activity.
    await cstore.complete_message(
        user, old, "r-late", "", "late", history_pb2.MESSAGE_STATUS_COMPLETE, "m", chat_pb2.Usage(), 3_000
    )
    first, cursor = await cstore.list_conversations(user, "", 1)
    rest, _ = await cstore.list_conversations(user, cursor, 10)
    assert [(c.id, c.updated_at_ms) for c in first + rest] == [(old, 5_000), (other, 4_000)]


async def test_a_conversation_written_before_versions_reads_as_one_path_and_is_upgraded_on_its_next_write(
    cstore: CassandraHistoryStore, cassandra_target: CassandraTarget
) -> None:
    ns = uuid.uuid4().hex[:8]
    user, cid = f"u-{ns}", f"c-{ns}"
    ks = cassandra_target.keyspace
    await cstore.create_conversation(user, cid, "old", 1_000)
    for i, (mid, role) in enumerate([("m1", "user"), ("r1", "assistant"), ("m2", "user")]):
        await cstore.append_message(user, cid, mid, role, f"text {i}", 1_000 + (i + 1) * BUCKET_MS)
    # As migration 5 finds them: no parents, no children rows, no leaf.
    for mid, at in (("m1", 1), ("r1", 2), ("m2", 3)):
        created = 1_000 + at * BUCKET_MS
        await cstore.db.execute(
            f"UPDATE {ks}.messages_by_bucket SET parent_id = null WHERE conversation_id = %s AND bucket_ms = %s"
            " AND created_at_ms = %s AND message_id = %s",
            (cid, created - created % BUCKET_MS, created, mid),
        )
    await cstore.db.execute(f"DELETE FROM {ks}.message_children WHERE conversation_id = %s", (cid,))
    await cstore.db.execute(
        f"UPDATE {ks}.conversations SET current_message_id = null WHERE conversation_id = %s", (cid,)
    )
    page, _ = await cstore.get_messages(user, cid, "", 10)
    assert [(m.id, m.parent_id, list(m.sibling_ids)) for m in page] == [
        ("m2", "r1", ["m2"]),
        ("r1", "m1", ["r1"]),
        ("m1", "", ["m1"]),
    ]
    # A regeneration of the old answer: the conversation gets explicit parents first, so the old
    # answer and the new one are versions of each other, and switching back finds its path.
    await cstore.set_current(user, cid, "m1", True, 9_000)
    await cstore.complete_message(
        user, cid, "r1b", "m1", "again", history_pb2.MESSAGE_STATUS_COMPLETE, "m", chat_pb2.Usage(), 9_001
    )
    assert list((await cstore.get_message(user, cid, "r1b")).sibling_ids) == ["r1", "r1b"]
    back = await cstore.set_current(user, cid, "r1", False, 9_002)
    assert back.current_message_id == "m2"
    page, _ = await cstore.get_messages(user, cid, "", 10)
    assert [m.id for m in page] == ["m2", "r1", "m1"]
