"""The embedded store's schema and its migrations, tracked in SQLite's `user_version`.

Each step runs in one transaction, so a file is always at one version. A file written by an
older Parley is brought forward when it is opened (or by `python -m parley_history migrate`).
"""

from __future__ import annotations

import sqlite3

from parley.v1 import history_pb2

_V1_TABLES = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations (user_id, updated_at_ms DESC, id DESC);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status INTEGER NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    reply_to_id TEXT NOT NULL DEFAULT '',
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_micros INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (conversation_id, id)
);
"""

# Version 2: the change log for sync (seq is commit order: one writer), messages paged by
# time, and the log backfilled from what an older file already holds.
_V2_SYNC = f"""
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id TEXT NOT NULL DEFAULT '',
    changed_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_by_user ON changes (user_id, seq);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages (conversation_id, created_at_ms DESC, id DESC);
INSERT INTO changes (user_id, kind, conversation_id, message_id, changed_at_ms)
SELECT user_id, kind, conversation_id, message_id, at_ms FROM (
    SELECT user_id, {history_pb2.CHANGE_KIND_CONVERSATION_CREATED} AS kind, id AS conversation_id,
           '' AS message_id, created_at_ms AS at_ms, 0 AS tie
    FROM conversations
    UNION ALL
    SELECT c.user_id,
           CASE WHEN m.role = 'assistant' THEN {history_pb2.CHANGE_KIND_MESSAGE_COMPLETED}
                ELSE {history_pb2.CHANGE_KIND_MESSAGE_ADDED} END,
           m.conversation_id, m.id, m.created_at_ms, 1
    FROM messages m JOIN conversations c ON c.id = m.conversation_id
) ORDER BY at_ms, tie;
"""

# Version 3: versions. A message's parent (the message before it on its path), its media and
# finish reason; the conversation's current leaf; continuations being streamed. What an older
# file holds becomes a single path: each message's parent is the one before it, the leaf is
# the newest message.
_V3_VERSIONS = """
ALTER TABLE conversations ADD COLUMN current_message_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN parent_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN media_ids TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN finish_reason TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS messages_by_parent ON messages (conversation_id, parent_id, created_at_ms, id);
UPDATE messages SET parent_id = COALESCE((
    SELECT p.id FROM messages p
    WHERE p.conversation_id = messages.conversation_id
      AND (p.created_at_ms < messages.created_at_ms
           OR (p.created_at_ms = messages.created_at_ms AND p.id < messages.id))
    ORDER BY p.created_at_ms DESC, p.id DESC LIMIT 1), '');
UPDATE conversations SET current_message_id = COALESCE((
    SELECT m.id FROM messages m WHERE m.conversation_id = conversations.id
    ORDER BY m.created_at_ms DESC, m.id DESC LIMIT 1), '');
CREATE TABLE IF NOT EXISTS continuations (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    response_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    base_chars INTEGER NOT NULL,
    base_input_tokens INTEGER NOT NULL,
    base_output_tokens INTEGER NOT NULL,
    base_cost_micros INTEGER NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, response_id)
)
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1_TABLES), (2, _V2_SYNC), (3, _V3_VERSIONS))
LATEST = MIGRATIONS[-1][0]


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> list[int]:
    """Bring the file to the latest version; returns the versions applied (none when current)."""
    applied = []
    for version, script in MIGRATIONS:
        if schema_version(db) >= version:
            continue
        statements = [s.strip() for s in script.split(";") if s.strip()]
        db.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the lock.
            if schema_version(db) < version:
                for statement in statements:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {version}")
                applied.append(version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return applied
