"""Schema migrations: an existing SQLite file is brought forward (its history kept and made
visible to sync); the Cassandra CQL migrations are well formed and idempotent by design."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from parley.v1 import history_pb2
from parley_history.cassandra_migrations import MigrationError, load_migrations, replication_for
from parley_history.sqlite_schema import LATEST, migrate, schema_version
from parley_history.sqlite_store import SqliteHistoryStore

# The schema files were created with before sync existed (user_version 0).
_FIRST_RELEASE_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);
CREATE INDEX conversations_by_user ON conversations (user_id, updated_at_ms DESC, id DESC);
CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, status INTEGER NOT NULL,
    model TEXT NOT NULL DEFAULT '', reply_to_id TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros INTEGER NOT NULL DEFAULT 0, created_at_ms INTEGER NOT NULL, UNIQUE (conversation_id, id));
INSERT INTO conversations VALUES ('c1', 'alice', 'old', 100, 300), ('c2', 'alice', 'older', 50, 50),
    ('c3', 'bob', 'his', 60, 60);
INSERT INTO messages (conversation_id, id, role, content, status, reply_to_id, created_at_ms) VALUES
    ('c1', 'm1', 'user', 'hello', 1, '', 200), ('c1', 'r1', 'assistant', 'hi', 1, 'm1', 300);
"""


def first_release_file(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.executescript(_FIRST_RELEASE_SCHEMA)
    db.commit()
    db.close()
    return path


async def test_an_old_sqlite_file_is_migrated_and_keeps_its_history(tmp_path: Path) -> None:
    store = SqliteHistoryStore(first_release_file(tmp_path / "h.sqlite3"), synchronous="NORMAL")
    try:
        messages, _ = await store.get_messages("alice", "c1", "", 10)
        assert [m.id for m in messages] == ["r1", "m1"]
        # One version each: a single path whose leaf is the newest message.
        assert [m.parent_id for m in messages] == ["m1", ""]
        assert [list(m.sibling_ids) for m in messages] == [["r1"], ["m1"]]
        assert (await store.get_conversation("alice", "c1")).current_message_id == "r1"
        page = await store.sync("alice", "", 100)
        assert [(c.kind, c.message.id or c.conversation_id) for c in page.changes] == [
            (history_pb2.CHANGE_KIND_CONVERSATION_CREATED, "c2"),
            (history_pb2.CHANGE_KIND_CONVERSATION_CREATED, "c1"),
            (history_pb2.CHANGE_KIND_MESSAGE_ADDED, "m1"),
            (history_pb2.CHANGE_KIND_MESSAGE_COMPLETED, "r1"),
        ]
        await store.append_message("alice", "c1", "m2", "user", "new", 400)
        after = await store.sync("alice", page.next_cursor, 100)
        assert [c.message.id for c in after.changes] == ["m2"]
        assert after.changes[0].message.parent_id == "r1" and after.changes[0].current_message_id == "m2"
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "h.sqlite3", isolation_level=None)
    assert schema_version(db) == LATEST
    assert migrate(db) == [], "a current file is left as it is"
    db.close()


def test_the_migrate_command_upgrades_a_file_and_can_run_again(tmp_path: Path) -> None:
    path = first_release_file(tmp_path / "h.sqlite3")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env |= {"PARLEY_HISTORY_STORE": "sqlite", "PARLEY_HISTORY_SQLITE_PATH": str(path)}
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "parley_history", "migrate"], env=env, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
    db = sqlite3.connect(path)
    assert schema_version(db) == LATEST
    assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 5, "backfilled once, not twice"
    db.close()


def test_the_cql_migrations_are_numbered_and_idempotent() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    for migration in migrations:
        statements = migration.statements("ks_test", replication_for("dc1", 3))
        assert statements
        for statement in statements:
            assert "$" not in statement
            if statement.upper().startswith("CREATE"):
                assert "IF NOT EXISTS" in statement.upper(), statement
            if "TABLE" in statement.split("(")[0].upper():
                assert "ks_test." in statement, "tables are named with their keyspace"
    first = migrations[0].statements("ks_test", replication_for("dc1", 3))[0]
    assert "{'class': 'NetworkTopologyStrategy', 'dc1': 3}" in first


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_keyspace.cql").write_text("SELECT 1;")
    (tmp_path / "0003_gap.cql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(tmp_path)
    (tmp_path / "two.cql").write_text("SELECT 1;")
    with pytest.raises(MigrationError):
        load_migrations(tmp_path)
