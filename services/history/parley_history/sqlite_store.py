"""The embedded history store: SQLite in WAL mode, one connection on one thread.

SQLite calls block, so they run on a single worker thread (which also serialises them, as
one connection requires) and never on the event loop. Every write and its change-log entry
commit in one transaction, so sync sees exactly what was stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest, NotFound

from .search import DEFAULT_SEARCH_CAPS, SearchCaps, search_conversations
from .sqlite_schema import migrate
from .store import (
    CONVERSATION_KINDS,
    DEFAULT_SYNC_PAGE,
    Clock,
    HistoryStore,
    RawPage,
    SyncPage,
    answer_not_stored,
    changes_within,
    clamp_limit,
    cursor_int,
    decode_cursor,
    encode_cursor,
    message_change_kind,
    message_not_found,
    new_message,
    walk_path_now,
    wall_clock_ms,
)

T = TypeVar("T")

_CONVERSATION_COLUMNS = "id, user_id, title, created_at_ms, updated_at_ms, current_message_id"
_MESSAGE_COLUMNS = (
    "seq, id, conversation_id, role, content, status, model, reply_to_id,"
    " input_tokens, output_tokens, cost_micros, created_at_ms, parent_id, media_ids, finish_reason"
)
# The most steps from a message down to the newest leaf below it (PUT current).
MAX_DESCENT = 100_000
# Parents whose children one sibling read asks for (SQLite allows 32,766 bound values).
_PARENTS_PER_READ = 500


def _newest_first(sql: str, args: list[Any], time_column: str, cursor: str, limit: int) -> tuple[str, list[Any]]:
    """`sql` (a SELECT whose WHERE ends it) and its `args`, paged newest first by (`time_column`,
    id) from after the cursor (time, id; '' = the newest), reading one row past `limit` (so that
    the caller knows whether there is more)."""
    if cursor:
        at, row_id = decode_cursor(cursor, 2)
        sql += f" AND ({time_column} < ? OR ({time_column} = ? AND id < ?))"
        args = [*args, cursor_int(at), cursor_int(at), row_id]
    return f"{sql} ORDER BY {time_column} DESC, id DESC LIMIT ?", [*args, limit + 1]


class SqliteHistoryStore(HistoryStore):
    def __init__(
        self,
        path: Path,
        synchronous: str = "FULL",
        clock: Clock = wall_clock_ms,
        search_caps: SearchCaps = DEFAULT_SEARCH_CAPS,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.search_caps = search_caps
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        migrate(self._db)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        await self._run(self._db.close)
        self._executor.shutdown(wait=True)

    async def unready(self) -> str | None:
        try:
            await self._run(lambda: self._db.execute("SELECT 1").fetchone())
        except sqlite3.Error as exc:
            return f"sqlite: {exc}"
        return None

    def _record(
        self, user_id: str, kind: history_pb2.ChangeKind.ValueType, conversation_id: str, message_id: str = ""
    ) -> None:
        self._db.execute(
            "INSERT INTO changes (user_id, kind, conversation_id, message_id, changed_at_ms) VALUES (?, ?, ?, ?, ?)",
            (user_id, kind, conversation_id, message_id, self._clock()),
        )

    # conversations

    async def create_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        def run() -> history_pb2.Conversation:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                inserted = self._db.execute(
                    "INSERT INTO conversations (id, user_id, title, created_at_ms, updated_at_ms)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (conversation_id, user_id, title, now_ms, now_ms),
                ).rowcount
                if inserted:
                    self._record(user_id, history_pb2.CHANGE_KIND_CONVERSATION_CREATED, conversation_id)
            return self._conversation(user_id, conversation_id)

        return await self._run(run)

    def _conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        row = self._db.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?",
            (conversation_id, user_id),
        ).fetchone()
        if row is None:
            raise NotFound("conversation not found", code="conversation_not_found")
        return _conversation(row)

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        return await self._run(self._conversation, user_id, conversation_id)

    async def list_conversations(
        self, user_id: str, cursor: str, limit: int
    ) -> tuple[list[history_pb2.Conversation], str]:
        limit = clamp_limit(limit)
        select = f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = ?"
        sql, args = _newest_first(select, [user_id], "updated_at_ms", cursor, limit)
        rows = await self._run(lambda: self._db.execute(sql, args).fetchall())
        page = [_conversation(r) for r in rows[:limit]]
        next_cursor = encode_cursor(page[-1].updated_at_ms, page[-1].id) if len(rows) > limit else ""
        return page, next_cursor

    async def rename_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        def run() -> history_pb2.Conversation:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                changed = self._db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND user_id = ?",
                    (title, conversation_id, user_id),
                ).rowcount
                if not changed:
                    raise NotFound("conversation not found", code="conversation_not_found")
                self._record(user_id, history_pb2.CHANGE_KIND_CONVERSATION_RENAMED, conversation_id)
            return self._conversation(user_id, conversation_id)

        return await self._run(run)

    async def delete_conversation(self, user_id: str, conversation_id: str, now_ms: int) -> None:
        def run() -> None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                # Its messages go with it (ON DELETE CASCADE).
                deleted = self._db.execute(
                    "DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
                ).rowcount
                if not deleted:
                    raise NotFound("conversation not found", code="conversation_not_found")
                self._record(user_id, history_pb2.CHANGE_KIND_CONVERSATION_DELETED, conversation_id)

        await self._run(run)

    # messages

    def _message_row(self, conversation_id: str, message_id: str) -> history_pb2.Message | None:
        row = self._db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND id = ?",
            (conversation_id, message_id),
        ).fetchone()
        return _message(row) if row else None

    def _leaf(self, conversation_id: str) -> str:
        row = self._db.execute(
            "SELECT current_message_id FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        return str(row[0]) if row else ""

    def _set_leaf(self, conversation_id: str, message_id: str) -> None:
        self._db.execute("UPDATE conversations SET current_message_id = ? WHERE id = ?", (message_id, conversation_id))

    def _insert_message(self, user_id: str, message: history_pb2.Message, leaf: str, parent_id: str | None) -> bool:
        """Insert once, with its change and the conversation's activity; False when it existed.

        A user message's parent is `parent_id`, else the current leaf (`leaf`), and it becomes
        the leaf; an answer's parent is the message it answers, and it becomes the leaf when that
        was the leaf. Either is dated after its parent, so a path read newest first meets it
        first. `message` is left as stored (its parent, date and media as a read returns them)."""
        if message.reply_to_id:
            parent_id = message.reply_to_id
        elif parent_id is None:
            parent_id = leaf
        if parent_id:
            parent = self._db.execute(
                "SELECT created_at_ms FROM messages WHERE conversation_id = ? AND id = ?",
                (message.conversation_id, parent_id),
            ).fetchone()
            if parent is None:
                if not message.reply_to_id:
                    raise message_not_found()
                parent_id = ""
            else:
                message.created_at_ms = max(message.created_at_ms, parent[0] + 1)
        message.parent_id = parent_id
        media_ids = " ".join(message.media_ids)
        inserted = self._db.execute(
            "INSERT INTO messages (conversation_id, id, role, content, status, model, reply_to_id,"
            " input_tokens, output_tokens, cost_micros, created_at_ms, parent_id, media_ids, finish_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id, id) DO NOTHING",
            (
                message.conversation_id,
                message.id,
                message.role,
                message.content,
                message.status,
                message.model,
                message.reply_to_id,
                message.usage.input_tokens,
                message.usage.output_tokens,
                message.usage.cost_micros,
                message.created_at_ms,
                message.parent_id,
                media_ids,
                message.finish_reason,
            ),
        ).rowcount
        if not inserted:
            return False
        if message.media_ids:
            message.media_ids[:] = media_ids.split()  # as _message reads them back
        if not message.reply_to_id or leaf == parent_id:
            self._db.execute(
                "UPDATE conversations SET current_message_id = ?, updated_at_ms = MAX(updated_at_ms, ?) WHERE id = ?",
                (message.id, message.created_at_ms, message.conversation_id),
            )
        else:
            self._db.execute(
                "UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?) WHERE id = ?",
                (message.created_at_ms, message.conversation_id),
            )
        self._record(user_id, message_change_kind(message.role), message.conversation_id, message.id)
        return True

    async def _store_message(
        self, user_id: str, message: history_pb2.Message, parent_id: str | None = None
    ) -> tuple[history_pb2.Message, bool]:
        return await self._run(self._write_message, user_id, message, parent_id)

    async def append_and_read(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        role: str,
        content: str,
        now_ms: int,
        read: int,
        *,
        parent_id: str | None = None,
        media_ids: Sequence[str] = (),
        after_stored: str = "",
    ) -> tuple[history_pb2.Message, bool, list[history_pb2.Message], str]:
        # The check, the write and the read in one call on the store's thread (one hop, not three).
        message = new_message(conversation_id, message_id, role, content, now_ms, media_ids)

        def run() -> tuple[history_pb2.Message, bool, list[history_pb2.Message], str]:
            if after_stored:
                self._conversation(user_id, conversation_id)
                if self._found_message(conversation_id, after_stored) is None:
                    raise answer_not_stored()
            stored, created = self._write_message(user_id, message, parent_id)
            page, cursor = self._path_page(user_id, conversation_id, "", read, "")
            return stored, created, page, cursor

        return await self._run(run)

    def _write_message(
        self, user_id: str, message: history_pb2.Message, parent_id: str | None
    ) -> tuple[history_pb2.Message, bool]:
        cid = message.conversation_id
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            found = self._db.execute(
                "SELECT current_message_id FROM conversations WHERE id = ? AND user_id = ?", (cid, user_id)
            ).fetchone()
            if found is None:
                raise NotFound("conversation not found", code="conversation_not_found")
            stored = self._continue(user_id, message) if message.role == "assistant" else None
            created = False
            if stored is None:
                stored = self._message_row(cid, message.id)
                if stored is None and self._insert_message(user_id, message, str(found[0]), parent_id):
                    # Stored as it stands: no need to read it back.
                    stored, created = message, True
        if stored is None:
            stored = self._message_row(cid, message.id)
            assert stored is not None
        return self._with_siblings(stored), created

    def _continue(self, user_id: str, answer: history_pb2.Message) -> history_pb2.Message | None:
        """When `answer` is a registered continuation: the continued message with it appended
        (once), else None."""
        row = self._db.execute(
            "SELECT message_id, base_chars, base_input_tokens, base_output_tokens, base_cost_micros, applied"
            " FROM continuations WHERE conversation_id = ? AND response_id = ?",
            (answer.conversation_id, answer.id),
        ).fetchone()
        if row is None:
            return None
        target = self._message_row(answer.conversation_id, row[0])
        if target is None or row[5]:
            return target
        u = answer.usage
        failed = answer.status == history_pb2.MESSAGE_STATUS_FAILED
        self._db.execute(
            "UPDATE messages SET content = ?, status = ?, finish_reason = ?, input_tokens = ?, output_tokens = ?,"
            " cost_micros = ? WHERE conversation_id = ? AND id = ?",
            (
                target.content[: row[1]] + answer.content,
                # A continuation that failed leaves the answer as it was (and so in prompts).
                target.status if failed else answer.status,
                target.finish_reason if failed else answer.finish_reason,
                row[2] + u.input_tokens,
                row[3] + u.output_tokens,
                row[4] + u.cost_micros,
                answer.conversation_id,
                target.id,
            ),
        )
        self._db.execute(
            "UPDATE continuations SET applied = 1 WHERE conversation_id = ? AND response_id = ?",
            (answer.conversation_id, answer.id),
        )
        self._db.execute(
            "UPDATE conversations SET updated_at_ms = MAX(updated_at_ms, ?) WHERE id = ?",
            (answer.created_at_ms, answer.conversation_id),
        )
        self._record(user_id, history_pb2.CHANGE_KIND_MESSAGE_COMPLETED, answer.conversation_id, target.id)
        return self._message_row(answer.conversation_id, target.id)

    def _raw_messages(self, conversation_id: str, before: str, limit: int) -> RawPage:
        """Every message (all versions), newest first, older than the cursor `before`."""
        select = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?"
        sql, args = _newest_first(select, [conversation_id], "created_at_ms", before, limit)
        rows = self._db.execute(sql, args).fetchall()
        page = [(m, encode_cursor(m.created_at_ms, m.id)) for m in (_message(r) for r in rows[:limit])]
        return page, page[-1][1] if len(rows) > limit else ""

    def _with_siblings(self, message: history_pb2.Message) -> history_pb2.Message:
        rows = self._db.execute(
            "SELECT id FROM messages WHERE conversation_id = ? AND parent_id = ? AND role = ?"
            " ORDER BY created_at_ms, id",
            (message.conversation_id, message.parent_id, message.role),
        ).fetchall()
        message.sibling_ids[:] = [r[0] for r in rows] or [message.id]
        return message

    def _with_siblings_all(
        self, conversation_id: str, messages: list[history_pb2.Message]
    ) -> list[history_pb2.Message]:
        """_with_siblings for a page of `conversation_id`'s messages, in one read per
        _PARENTS_PER_READ parents instead of one per message."""
        parents = sorted({m.parent_id for m in messages})
        rows: list[tuple[int, str, str, str]] = []
        for at in range(0, len(parents), _PARENTS_PER_READ):
            chunk = parents[at : at + _PARENTS_PER_READ]
            # Sorted here, not by ORDER BY: with it SQLite reads the whole conversation by time
            # instead of each parent's children from messages_by_parent. (Python orders str by
            # code point, as SQLite's BINARY collation orders their UTF-8.)
            rows += self._db.execute(
                "SELECT created_at_ms, id, parent_id, role FROM messages WHERE conversation_id = ?"
                f" AND parent_id IN ({', '.join('?' * len(chunk))})",
                (conversation_id, *chunk),
            ).fetchall()
        children: dict[tuple[str, str], list[str]] = {}
        for _, message_id, parent_id, role in sorted(rows):
            children.setdefault((parent_id, role), []).append(message_id)
        for message in messages:
            message.sibling_ids[:] = children.get((message.parent_id, message.role)) or [message.id]
        return messages

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int, *, leaf_id: str = ""
    ) -> tuple[list[history_pb2.Message], str]:
        return await self._run(self._path_page, user_id, conversation_id, before, limit, leaf_id)

    def _path_page(
        self, user_id: str, conversation_id: str, before: str, limit: int, leaf_id: str
    ) -> tuple[list[history_pb2.Message], str]:
        """get_messages, whole, on the store's thread: one hop from the event loop, not one per read."""
        found = self._db.execute(
            "SELECT current_message_id FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
        ).fetchone()
        if found is None:
            raise NotFound("conversation not found", code="conversation_not_found")
        leaf = leaf_id or str(found[0])
        row = (
            self._db.execute(
                "SELECT created_at_ms FROM messages WHERE conversation_id = ? AND id = ?", (conversation_id, leaf)
            ).fetchone()
            if leaf
            else None
        )
        if row is None:
            if leaf_id:
                raise message_not_found()
            if not before:
                return [], ""
            leaf, first = "", ""
        else:
            # Just newer than the leaf, so the walk starts at it.
            first = encode_cursor(row[0], leaf + "\U0010ffff")
        # The walk asks for PATH_READ messages a read. A path without other versions needs one
        # more than the page (to know whether it goes on): that first, twice as many each time after.
        reads = [clamp_limit(limit) + 1]

        def raw(at: str, n: int) -> RawPage:
            wanted = reads[-1]
            reads.append(wanted * 2)
            return self._raw_messages(conversation_id, at, min(n, wanted))

        page, cursor = walk_path_now(raw, leaf, first, before, limit)
        return self._with_siblings_all(conversation_id, page), cursor

    def _found_message(self, conversation_id: str, message_id: str) -> history_pb2.Message | None:
        """The message, or the one a continuation with that response id was appended to."""
        found = self._message_row(conversation_id, message_id)
        if found is None:
            continued = self._db.execute(
                "SELECT message_id FROM continuations WHERE conversation_id = ? AND response_id = ? AND applied = 1",
                (conversation_id, message_id),
            ).fetchone()
            found = self._message_row(conversation_id, continued[0]) if continued else None
        return found

    async def get_message(self, user_id: str, conversation_id: str, message_id: str) -> history_pb2.Message:
        def run() -> history_pb2.Message:
            self._conversation(user_id, conversation_id)
            found = self._found_message(conversation_id, message_id)
            if found is None:
                raise message_not_found()
            return self._with_siblings(found)

        return await self._run(run)

    async def set_current(
        self, user_id: str, conversation_id: str, message_id: str, exact: bool, now_ms: int
    ) -> history_pb2.Conversation:
        def run() -> history_pb2.Conversation:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._conversation(user_id, conversation_id)
                if self._message_row(conversation_id, message_id) is None:
                    raise message_not_found()
                leaf = message_id
                for _ in range(0 if exact else MAX_DESCENT):
                    child = self._db.execute(
                        "SELECT id FROM messages WHERE conversation_id = ? AND parent_id = ?"
                        " ORDER BY created_at_ms DESC, id DESC LIMIT 1",
                        (conversation_id, leaf),
                    ).fetchone()
                    if child is None:
                        break
                    leaf = child[0]
                if leaf != self._leaf(conversation_id):
                    self._set_leaf(conversation_id, leaf)
                    self._record(user_id, history_pb2.CHANGE_KIND_CONVERSATION_UPDATED, conversation_id)
            return self._conversation(user_id, conversation_id)

        return await self._run(run)

    async def begin_continuation(
        self, user_id: str, conversation_id: str, message_id: str, response_id: str
    ) -> tuple[history_pb2.Message, int, bool]:
        def run() -> tuple[history_pb2.Message, int, bool]:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._conversation(user_id, conversation_id)
                target = self._message_row(conversation_id, message_id)
                if target is None:
                    raise message_not_found()
                if target.role != "assistant":
                    raise InvalidRequest("only an answer can be continued", code="not_continuable")
                u = target.usage
                self._db.execute(
                    "INSERT INTO continuations (conversation_id, response_id, message_id, base_chars,"
                    " base_input_tokens, base_output_tokens, base_cost_micros) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (conversation_id, response_id) DO NOTHING",
                    (
                        conversation_id,
                        response_id,
                        message_id,
                        len(target.content),
                        u.input_tokens,
                        u.output_tokens,
                        u.cost_micros,
                    ),
                )
                row = self._db.execute(
                    "SELECT message_id, base_chars, applied FROM continuations"
                    " WHERE conversation_id = ? AND response_id = ?",
                    (conversation_id, response_id),
                ).fetchone()
            if row[0] != message_id:
                raise InvalidRequest("this response continues another message", code="invalid_request")
            return self._with_siblings(target), int(row[1]), bool(row[2])

        return await self._run(run)

    async def conversation_media(self, user_id: str, conversation_id: str) -> list[str]:
        def run() -> list[str]:
            self._conversation(user_id, conversation_id)
            rows = self._db.execute(
                "SELECT media_ids FROM messages WHERE conversation_id = ? AND media_ids != ''", (conversation_id,)
            ).fetchall()
            return list(dict.fromkeys(m for r in rows for m in str(r[0]).split()))

        return await self._run(run)

    async def search_conversations(self, user_id: str, query: str, limit: int) -> list[history_pb2.SearchHit]:
        # The same bounded scan as on Cassandra (search.py), so both stores find the same things.
        return await search_conversations(
            self.list_conversations, self.get_messages, user_id, query, limit, self.search_caps
        )

    # sync

    async def sync(self, user_id: str, since: str, limit: int) -> SyncPage:
        limit = clamp_limit(limit, DEFAULT_SYNC_PAGE)
        after = cursor_int(decode_cursor(since, 1)[0]) if since else 0

        def run() -> tuple[list[history_pb2.Change], int, bool]:
            rows = self._db.execute(
                "SELECT seq, kind, conversation_id, message_id, changed_at_ms FROM changes"
                " WHERE user_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (user_id, after, limit + 1),
            ).fetchall()
            hydrated = [self._hydrate(user_id, *row[1:]) for row in rows[:limit]]
            taken = changes_within(hydrated)
            last = rows[taken - 1][0] if taken else after
            return [c for c in hydrated[:taken] if c is not None], last, len(rows) > taken

        changes, last, has_more = await self._run(run)
        return SyncPage(changes, encode_cursor(last) if last else since, has_more)

    def _hydrate(
        self, user_id: str, kind: int, conversation_id: str, message_id: str, changed_at_ms: int
    ) -> history_pb2.Change | None:
        change = history_pb2.Change(kind=kind, conversation_id=conversation_id, changed_at_ms=changed_at_ms)
        if kind == history_pb2.CHANGE_KIND_CONVERSATION_DELETED:
            return change
        try:
            conversation = self._conversation(user_id, conversation_id)
        except NotFound:
            return None  # deleted since: the deletion is a later change
        change.current_message_id = conversation.current_message_id
        if kind in CONVERSATION_KINDS:
            change.conversation.CopyFrom(conversation)
            return change
        message = self._message_row(conversation_id, message_id)
        if message is None:
            return None
        change.message.CopyFrom(self._with_siblings(message))
        return change


def _conversation(row: tuple[Any, ...]) -> history_pb2.Conversation:
    return history_pb2.Conversation(
        id=row[0], user_id=row[1], title=row[2], created_at_ms=row[3], updated_at_ms=row[4], current_message_id=row[5]
    )


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
        parent_id=row[12],
        media_ids=str(row[13]).split(),
        finish_reason=row[14],
    )
