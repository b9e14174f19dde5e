"""The embedded history store: SQLite in WAL mode, one connection on one thread.

SQLite calls block, so they run on a single worker thread (which also serialises them, as
one connection requires) and never on the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import NotFound

from .store import clamp_limit, cursor_int, decode_cursor, encode_cursor

T = TypeVar("T")

SCHEMA = """
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

_MESSAGE_COLUMNS = (
    "seq, id, conversation_id, role, content, status, model, reply_to_id,"
    " input_tokens, output_tokens, cost_micros, created_at_ms"
)


class SqliteHistoryStore:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)

    # conversations

    async def create_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        def run() -> None:
            self._db.execute(
                "INSERT INTO conversations (id, user_id, title, created_at_ms, updated_at_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (conversation_id, user_id, title, now_ms, now_ms),
            )

        await self._run(run)
        return await self.get_conversation(user_id, conversation_id)

    def _conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        row = self._db.execute(
            "SELECT id, user_id, title, created_at_ms, updated_at_ms FROM conversations WHERE id = ? AND user_id = ?",
            (conversation_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFound("conversation not found", code="conversation_not_found")
        return history_pb2.Conversation(
            id=row[0], user_id=row[1], title=row[2], created_at_ms=row[3], updated_at_ms=row[4]
        )

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        return await self._run(self._conversation, user_id, conversation_id)

    async def list_conversations(
        self, user_id: str, cursor: str, limit: int
    ) -> tuple[list[history_pb2.Conversation], str]:
        limit = clamp_limit(limit)

        def run() -> list[tuple[Any, ...]]:
            sql = "SELECT id, user_id, title, created_at_ms, updated_at_ms FROM conversations WHERE user_id = ?"
            args: list[Any] = [user_id]
            if cursor:
                updated, cid = decode_cursor(cursor, 2)
                sql += " AND (updated_at_ms < ? OR (updated_at_ms = ? AND id < ?))"
                args += [cursor_int(updated), cursor_int(updated), cid]
            sql += " ORDER BY updated_at_ms DESC, id DESC LIMIT ?"
            args.append(limit + 1)
            return self._db.execute(sql, args).fetchall()

        rows = await self._run(run)
        page = [
            history_pb2.Conversation(id=r[0], user_id=r[1], title=r[2], created_at_ms=r[3], updated_at_ms=r[4])
            for r in rows[:limit]
        ]
        next_cursor = encode_cursor(page[-1].updated_at_ms, page[-1].id) if len(rows) > limit else ""
        return page, next_cursor

    # messages

    def _message_row(self, conversation_id: str, message_id: str) -> history_pb2.Message | None:
        row = self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND id = ?",
            (conversation_id, message_id),
        ).fetchone()
        return _message(row) if row else None

    async def append_message(
        self, user_id: str, conversation_id: str, message_id: str, role: str, content: str, now_ms: int
    ) -> tuple[history_pb2.Message, bool]:
        def run() -> tuple[history_pb2.Message, bool]:
            self._conversation(user_id, conversation_id)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                existing = self._message_row(conversation_id, message_id)
                if existing is not None:
                    return existing, False
                self._db.execute(
                    "INSERT INTO messages (conversation_id, id, role, content, status, created_at_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (conversation_id, message_id, role, content, history_pb2.MESSAGE_STATUS_COMPLETE, now_ms),
                )
                self._touch(conversation_id, now_ms)
            stored = self._message_row(conversation_id, message_id)
            assert stored is not None
            return stored, True

        return await self._run(run)

    def _touch(self, conversation_id: str, now_ms: int) -> None:
        self._db.execute(
            "UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?) WHERE id = ?",
            (now_ms, conversation_id),
        )

    async def complete_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        reply_to_id: str,
        content: str,
        status: history_pb2.MessageStatus.ValueType,
        model: str,
        usage: chat_pb2.Usage,
        now_ms: int,
    ) -> history_pb2.Message:
        def run() -> history_pb2.Message:
            self._conversation(user_id, conversation_id)
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO messages (conversation_id, id, role, content, status, model, reply_to_id,"
                    " input_tokens, output_tokens, cost_micros, created_at_ms)"
                    " VALUES (?, ?, 'assistant', ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (conversation_id, id) DO NOTHING",
                    (
                        conversation_id,
                        message_id,
                        content,
                        status,
                        model,
                        reply_to_id,
                        usage.input_tokens,
                        usage.output_tokens,
                        usage.cost_micros,
                        now_ms,
                    ),
                )
                self._touch(conversation_id, now_ms)
            stored = self._message_row(conversation_id, message_id)
            assert stored is not None
            return stored

        return await self._run(run)

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int
    ) -> tuple[list[history_pb2.Message], str]:
        limit = clamp_limit(limit)

        def run() -> list[tuple[Any, ...]]:
            self._conversation(user_id, conversation_id)
            sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
            args: list[Any] = [conversation_id]
            if before:
                (seq,) = decode_cursor(before, 1)
                sql += " AND seq < ?"
                args.append(cursor_int(seq))
            sql += " ORDER BY seq DESC LIMIT ?"
            args.append(limit + 1)
            return self._db.execute(sql, args).fetchall()

        rows = await self._run(run)
        page = [_message(r) for r in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else ""
        return page, next_cursor


def _message(row: tuple[Any, ...]) -> history_pb2.Message:
    return history_pb2.Message(
        id=row[1],
        conversation_id=row[2],
        role=row[3],
        content=row[4],
        status=row[5],
        model=row[6],
        reply_to_id=row[7],
        usage=chat_pb2.Usage(input_tokens=row[8], output_tokens=row[9], cost_micros=row[10]),
        created_at_ms=row[11],
    )
