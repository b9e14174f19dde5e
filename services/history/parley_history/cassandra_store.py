"""The production history store on Cassandra (the data model: docs/history-data-model.md).

Writes are safe to retry and to race: a message's key is fixed by the lightweight transaction
that claims its id, small rows that belong together (activity, list position, change) go in
one logged batch, and readers check list rows against the canonical conversation row, so a
half-finished or raced write is finished by the next try and never shows twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from cassandra.query import UNSET_VALUE, PreparedStatement

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import Gone, NotFound, ParleyError

from .cassandra_cql import prepare_all
from .cassandra_session import CassandraSession, Row
from .search import DEFAULT_SEARCH_CAPS, SearchCaps, search_conversations
from .store import (
    CONVERSATION_KINDS,
    DEFAULT_SYNC_PAGE,
    MAX_PAGE_BYTES,
    Clock,
    SyncPage,
    bucket_start,
    changes_within,
    clamp_limit,
    cursor_int,
    decode_cursor,
    encode_cursor,
    final_answer,
    fit_bytes,
    message_change_kind,
    new_message,
    wall_clock_ms,
)

Items = list[tuple[PreparedStatement, Sequence[Any]]]

_BUCKETS_PER_READ = 64
DEFAULT_RETENTION_MS = 90 * 86_400_000
_SNAPSHOT = "snapshot"
_LIST_SCANS = 8  # list rounds before a (shorter) page is returned with its cursor
_FAR_FUTURE_MS = 2**62
# Reads in flight at once for one sync page (each change's entity is read by its key).
_HYDRATE_CONCURRENCY = 16


def _not_found() -> NotFound:
    return NotFound("conversation not found", code="conversation_not_found")


class CassandraHistoryStore:
    def __init__(
        self,
        db: CassandraSession,
        statements: dict[str, PreparedStatement],
        *,
        bucket_ms: int,
        settle_ms: int,
        clock: Clock = wall_clock_ms,
        retention_ms: int = DEFAULT_RETENTION_MS,
        search_caps: SearchCaps = DEFAULT_SEARCH_CAPS,
    ) -> None:
        self.db = db
        self.q = statements
        self.bucket_ms = bucket_ms
        # Sync serves only changes older than this: a change is timed just before its batch is
        # sent, so one timed earlier may still land later; settling covers that write's timeout.
        self.settle_ms = settle_ms
        self.clock = clock
        # How long the change log keeps a change (its TTL); older cursors have expired.
        self.retention_ms = retention_ms
        self.search_caps = search_caps

    @classmethod
    async def open(
        cls,
        db: CassandraSession,
        *,
        bucket_ms: int,
        settle_ms: int,
        clock: Clock = wall_clock_ms,
        retention_ms: int = DEFAULT_RETENTION_MS,
        search_caps: SearchCaps = DEFAULT_SEARCH_CAPS,
    ) -> CassandraHistoryStore:
        return cls(
            db,
            await prepare_all(db),
            bucket_ms=bucket_ms,
            settle_ms=settle_ms,
            clock=clock,
            retention_ms=retention_ms,
            search_caps=search_caps,
        )

    async def close(self) -> None:
        await self.db.close()

    async def unready(self) -> str | None:
        try:
            await self.db.execute(self.q["ready"], (), timeout=2.0)
        except ParleyError as exc:
            return f"cassandra: {exc}"
        return None

    async def _run(self, name: str, *params: Any) -> list[Row]:
        return await self.db.execute(self.q[name], params)

    def _change(
        self,
        user_id: str,
        kind: history_pb2.ChangeKind.ValueType,
        conversation_id: str,
        message_id: str = "",
        message_bucket_ms: int | None = None,
        message_created_at_ms: int | None = None,
    ) -> Items:
        at = self.clock()
        bucket = bucket_start(at, self.bucket_ms)
        # Deterministic, so a retried write lands on the same row; short, so cursors stay small.
        change_id = hashlib.sha256(f"{int(kind)}\x1f{conversation_id}\x1f{message_id}".encode()).hexdigest()[:24]
        ttl = max(1, self.retention_ms // 1000)
        return [
            (
                self.q["change_insert"],
                (user_id, bucket, at, change_id, int(kind), conversation_id, message_id,
                 # Unset, not null: a null bind writes a tombstone.
                 UNSET_VALUE if message_bucket_ms is None else message_bucket_ms,
                 UNSET_VALUE if message_created_at_ms is None else message_created_at_ms, ttl),
            ),
            (self.q["change_bucket_insert"], (user_id, bucket, ttl)),
        ]  # fmt: skip

    # conversations

    async def _conversation_row(self, user_id: str, conversation_id: str) -> Row:
        rows = await self._run("conversation_get", conversation_id)
        if not rows or rows[0]["user_id"] != user_id or rows[0]["deleted_at_ms"] is not None:
            raise _not_found()
        return rows[0]

    async def create_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        if not await self._run("sync_user_get", user_id):
            # The user's change log begins (two first creations at once: either time will do).
            await self._run("sync_user_insert", user_id, self.clock())
        await self.db.batch(
            [
                (self.q["conversation_insert"], (conversation_id, user_id, title, now_ms)),
                (self.q["conversation_touch"], (now_ms * 1000, now_ms, conversation_id)),
                (self.q["conversation_listed"], (now_ms * 1000, now_ms, conversation_id)),
                (self.q["listed_insert"], (user_id, now_ms, conversation_id)),
                *self._change(user_id, history_pb2.CHANGE_KIND_CONVERSATION_CREATED, conversation_id),
            ]
        )
        return history_pb2.Conversation(
            id=conversation_id, user_id=user_id, title=title, created_at_ms=now_ms, updated_at_ms=now_ms
        )

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        return _conversation(conversation_id, await self._conversation_row(user_id, conversation_id))

    async def _listed(self, user_id: str, row: Row) -> history_pb2.Conversation | None:
        """The conversation a list row points at, if that row is current (not stale or deleted)."""
        canonical = await self._run("conversation_get", row["conversation_id"])
        if not canonical:
            return None
        current = canonical[0]
        if (
            current["user_id"] != user_id
            or current["deleted_at_ms"] is not None
            or listed_at(current) != row["updated_at_ms"]
        ):
            return None
        return _conversation(row["conversation_id"], current)

    async def list_conversations(
        self, user_id: str, cursor: str, limit: int
    ) -> tuple[list[history_pb2.Conversation], str]:
        limit = clamp_limit(limit)
        position: tuple[int, str] | None = None
        if cursor:
            updated, cid = decode_cursor(cursor, 2)
            position = (cursor_int(updated), cid)
        found: list[history_pb2.Conversation] = []
        listed_positions: list[tuple[int, str]] = []
        exhausted = False
        for _ in range(_LIST_SCANS):
            fetch = limit + 1 - len(found)
            if position is None:
                rows = await self._run("listed_first", user_id, fetch)
            else:
                rows = await self._run("listed_after", user_id, position[0], position[1], fetch)
            checked = await asyncio.gather(*(self._listed(user_id, r) for r in rows))
            for row, conversation in zip(rows, checked, strict=True):
                if conversation is not None:
                    found.append(conversation)
                    listed_positions.append((row["updated_at_ms"], row["conversation_id"]))
            if rows:
                position = (rows[-1]["updated_at_ms"], rows[-1]["conversation_id"])
            if len(rows) < fetch:
                exhausted = True
                break
            if len(found) > limit:
                break
        # A list row sits where the activity was when it last moved (the top row does not move
        # again): within a page, the exact activity time orders them.
        page = sorted(found[:limit], key=lambda c: (c.updated_at_ms, c.id), reverse=True)
        if len(found) > limit:
            return page, encode_cursor(*listed_positions[limit - 1])
        if not exhausted and position is not None:
            # Many stale rows in a row: a short page, and the next one starts where this scan ended.
            return page, encode_cursor(*position)
        return page, ""

    async def rename_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        row = await self._conversation_row(user_id, conversation_id)
        await self.db.batch(
            [
                (self.q["conversation_rename"], (title, conversation_id)),
                *self._change(user_id, history_pb2.CHANGE_KIND_CONVERSATION_RENAMED, conversation_id),
            ]
        )
        renamed = _conversation(conversation_id, row)
        renamed.title = title
        return renamed

    async def delete_conversation(self, user_id: str, conversation_id: str, now_ms: int) -> None:
        row = await self._conversation_row(user_id, conversation_id)
        # Messages first: if this dies half-way the conversation is still there, and a retry
        # finishes the job. The marker last makes it (and any message raced in) invisible.
        upper = _FAR_FUTURE_MS
        while buckets := await self._run("message_buckets_upto", conversation_id, upper, _BUCKETS_PER_READ):
            await asyncio.gather(*(self._run("messages_drop", conversation_id, b["bucket_ms"]) for b in buckets))
            upper = buckets[-1]["bucket_ms"] - 1
        await self._run("message_buckets_drop", conversation_id)
        # The message claims expire by themselves (a claim of a deleted conversation is never
        # read: its messages are refused first).
        await self.db.batch(
            [
                (self.q["conversation_delete"], (now_ms, conversation_id)),
                (self.q["listed_delete"], (user_id, listed_at(row), conversation_id)),
                *self._change(user_id, history_pb2.CHANGE_KIND_CONVERSATION_DELETED, conversation_id),
            ]
        )

    # messages

    async def _store_message(self, user_id: str, message: history_pb2.Message) -> tuple[history_pb2.Message, bool]:
        conversation = await self._conversation_row(user_id, message.conversation_id)
        cid, mid = message.conversation_id, message.id
        bucket = bucket_start(message.created_at_ms, self.bucket_ms)
        # The list's first row, read beside the claim: a conversation already at the top of the
        # list stays where it is (each move is a delete and an insert, and leaves a tombstone).
        claimed, top = await asyncio.gather(
            self._run("message_claim", cid, mid, bucket, message.created_at_ms), self._run("listed_first", user_id, 1)
        )
        claim = claimed[0]
        created = bool(claim["[applied]"])
        if not created:
            # Stored before (or being stored): the first claim fixed the key.
            bucket, message.created_at_ms = claim["bucket_ms"], claim["created_at_ms"]
            if claim.get("recorded"):
                rows = await self._run("message_get", cid, bucket, message.created_at_ms, mid)
                if not rows:
                    raise _not_found()  # deleted with its conversation meanwhile
                return _message(rows[0]), False
            # The first writer stopped before finishing (or is still writing): finish with the
            # same key, at a write timestamp just below the claimer's, so that its row, if it
            # lands, is the one kept.
        written_at = message.created_at_ms * 1000 + (1 if created else 0)
        u = message.usage
        await self._run(
            "message_insert",
            cid, bucket, message.created_at_ms, mid, message.role, message.content, int(message.status),
            message.model, message.reply_to_id, u.input_tokens, u.output_tokens, u.cost_micros, written_at,
        )  # fmt: skip
        items: Items = [(self.q["message_bucket_insert"], (cid, bucket))]
        at = message.created_at_ms
        if at > (conversation["updated_at_ms"] or 0):
            items.append((self.q["conversation_touch"], (at * 1000, at, cid)))
        listed = listed_at(conversation)
        on_top = bool(top) and top[0]["conversation_id"] == cid and top[0]["updated_at_ms"] == listed
        if conversation.get("listed_at_ms") is None or (at > listed and not on_top):
            # To the conversation's latest activity (a row written before migration 3 has no
            # listed time and moves on its first message, which may be older than its activity).
            to = max(at, conversation["updated_at_ms"] or 0)
            items.append((self.q["conversation_listed"], (to * 1000, to, cid)))
            if to != listed:  # (a delete and an insert of one row in one batch: the delete wins)
                items += [
                    (self.q["listed_delete"], (user_id, listed, cid)),
                    (self.q["listed_insert"], (user_id, to, cid)),
                ]
        items += self._change(user_id, message_change_kind(message.role), cid, mid, bucket, message.created_at_ms)
        items.append((self.q["message_recorded"], (cid, mid)))
        await self.db.batch(items)
        if not created:
            # What was kept: the claimer's row if it landed meanwhile.
            rows = await self._run("message_get", cid, bucket, message.created_at_ms, mid)
            if rows:
                return _message(rows[0]), False
        return message, created

    async def append_message(
        self, user_id: str, conversation_id: str, message_id: str, role: str, content: str, now_ms: int
    ) -> tuple[history_pb2.Message, bool]:
        message = new_message(conversation_id, message_id, role, content, now_ms)
        return await self._store_message(user_id, message)

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
        message = final_answer(conversation_id, message_id, reply_to_id, content, status, model, usage, now_ms)
        stored, _ = await self._store_message(user_id, message)
        return stored

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int, *, max_bytes: int = MAX_PAGE_BYTES
    ) -> tuple[list[history_pb2.Message], str]:
        limit = clamp_limit(limit)
        after: tuple[int, int, str] | None = None
        if before:
            bucket, created, mid = decode_cursor(before, 3)
            after = (cursor_int(bucket), cursor_int(created), mid)
        await self._conversation_row(user_id, conversation_id)
        found = await self._message_rows(conversation_id, after, limit + 1, "messages_first", "messages_before")
        page = fit_bytes([_message(r) for _, r in found[:limit]], max_bytes)
        if len(found) <= len(page):
            return page, ""
        last_bucket, last = found[len(page) - 1]
        return page, encode_cursor(last_bucket, last["created_at_ms"], last["message_id"])

    async def _message_rows(
        self, conversation_id: str, after: tuple[int, int, str] | None, want: int, first: str, before: str
    ) -> list[tuple[int, Row]]:
        """Up to `want` message rows (with their buckets) older than `after`, newest first,
        walking only the buckets that exist; `first` and `before` name the statements to read
        a bucket from its start and from a position."""
        found: list[tuple[int, Row]] = []
        upper = after[0] if after else _FAR_FUTURE_MS
        while len(found) < want:
            buckets = await self._run("message_buckets_upto", conversation_id, upper, _BUCKETS_PER_READ)
            for b in (r["bucket_ms"] for r in buckets):
                n = want - len(found)
                if after is not None and b == after[0]:
                    rows = await self._run(before, conversation_id, b, after[1], after[2], n)
                else:
                    rows = await self._run(first, conversation_id, b, n)
                found += [(b, r) for r in rows]
                if len(found) >= want:
                    break
            if len(buckets) < _BUCKETS_PER_READ:
                break
            upper = buckets[-1]["bucket_ms"] - 1
        return found

    async def _message_texts(
        self, user_id: str, conversation_id: str, before: str, limit: int
    ) -> tuple[list[history_pb2.Message], str]:
        """Search's read: a page of a listed conversation's messages, newest first, with their
        ids and text only, and without get_messages' ownership read (the list has just read the
        conversation): a search reads a conversation's row once, its buckets and its messages."""
        after: tuple[int, int, str] | None = None
        if before:
            bucket, created, mid = decode_cursor(before, 3)
            after = (cursor_int(bucket), cursor_int(created), mid)
        found = await self._message_rows(
            conversation_id, after, limit + 1, "message_texts_first", "message_texts_before"
        )
        page = [
            history_pb2.Message(
                id=r["message_id"],
                conversation_id=conversation_id,
                content=r["content"] or "",
                created_at_ms=r["created_at_ms"],
            )
            for _, r in found[:limit]
        ]
        if len(found) <= limit:
            return page, ""
        last_bucket, last = found[limit - 1]
        return page, encode_cursor(last_bucket, last["created_at_ms"], last["message_id"])

    async def search_conversations(self, user_id: str, query: str, limit: int) -> list[history_pb2.SearchHit]:
        # No index answers a case-insensitive substring in Cassandra 5.0 (search.py says why): a
        # scan of the user's list and messages, newest first, bounded by search_caps.
        return await search_conversations(
            self.list_conversations, self._message_texts, user_id, query, limit, self.search_caps
        )

    # sync

    async def sync(self, user_id: str, since: str, limit: int) -> SyncPage:
        limit = clamp_limit(limit, DEFAULT_SYNC_PAGE)
        now = self.clock()
        horizon = now - self.settle_ms
        after: tuple[int, int, str] | None = None
        if since:
            parts = decode_cursor(since, 3, 6)
            if parts[0] == _SNAPSHOT:
                return await self._snapshot(user_id, parts, limit)
            bucket, changed, change_id = parts
            after = (cursor_int(bucket), cursor_int(changed), change_id)
            if after[1] < now - self.retention_ms:
                raise Gone(
                    "this sync cursor is older than the change log keeps: start again from the beginning",
                    code="sync_cursor_expired",
                )
        elif await self._log_may_have_expired(user_id, now):
            # The log has lost its oldest changes: the beginning is a snapshot of what is now.
            start = bucket_start(horizon, self.bucket_ms)
            return await self._snapshot(user_id, [_SNAPSHOT, "", "", "", str(start), str(horizon)], limit)
        rows = await self._settled_changes(user_id, after, limit + 1, horizon)
        hydrated = await self._hydrate(user_id, rows[:limit])
        taken = changes_within(hydrated)
        if taken:
            last = rows[taken - 1]
            next_cursor = encode_cursor(last["bucket_ms"], last["changed_at_ms"], last["change_id"])
        else:
            next_cursor = since
        return SyncPage([c for c in hydrated[:taken] if c is not None], next_cursor, len(rows) > taken)

    async def _log_may_have_expired(self, user_id: str, now: int) -> bool:
        rows = await self._run("sync_user_get", user_id)
        return bool(rows) and rows[0]["first_change_at_ms"] < now - self.retention_ms

    async def _snapshot(self, user_id: str, parts: list[str], limit: int) -> SyncPage:
        """A page of the user's state as it is now: each live conversation (as a creation) and
        its messages, in list order; then the cursor of the change log from where the snapshot
        began (what changed meanwhile comes again: clients apply changes by id)."""
        _, listed_updated, listed_cid, messages_before, log_bucket, log_at = parts
        position = (cursor_int(listed_updated), listed_cid) if listed_cid else None
        # Checked now, not when the snapshot ends: a cursor that is not ours is refused at once.
        log_start = (cursor_int(log_bucket), cursor_int(log_at))
        changes: list[history_pb2.Change] = []
        size = 0
        current = listed_cid if messages_before else ""
        while len(changes) < limit:
            if not current:
                if position is None:
                    rows = await self._run("listed_first", user_id, 1)
                else:
                    rows = await self._run("listed_after", user_id, position[0], position[1], 1)
                if not rows:
                    # Every conversation sent: the change log from where the snapshot began.
                    log = encode_cursor(*log_start, "")
                    return SyncPage(changes, log, True)
                position = (rows[0]["updated_at_ms"], rows[0]["conversation_id"])
                conversation = await self._listed(user_id, rows[0])
                if conversation is None:
                    continue  # a stale list row
                change = history_pb2.Change(
                    kind=history_pb2.CHANGE_KIND_CONVERSATION_CREATED,
                    conversation_id=conversation.id,
                    changed_at_ms=conversation.updated_at_ms,
                    conversation=conversation,
                )
                changes.append(change)
                size += change.ByteSize()
                current, messages_before = conversation.id, ""
                continue
            try:
                page, more = await self.get_messages(
                    user_id, current, messages_before, limit - len(changes), max_bytes=MAX_PAGE_BYTES - size
                )
            except NotFound:
                page, more = [], ""  # deleted meanwhile
            for message in page:
                change = history_pb2.Change(
                    kind=message_change_kind(message.role),
                    conversation_id=current,
                    changed_at_ms=message.created_at_ms,
                    message=message,
                )
                changes.append(change)
                size += change.ByteSize()
            messages_before = more
            if not more:
                current = ""
            if size >= MAX_PAGE_BYTES:
                break
        assert position is not None
        cursor = encode_cursor(_SNAPSHOT, position[0], position[1], messages_before, *log_start)
        return SyncPage(changes, cursor, True)

    async def _settled_changes(
        self, user_id: str, after: tuple[int, int, str] | None, want: int, horizon: int
    ) -> list[Row]:
        found: list[Row] = []
        lower = after[0] if after else 0
        while len(found) < want:
            buckets = await self._run("change_buckets_from", user_id, lower, _BUCKETS_PER_READ)
            for b in (r["bucket_ms"] for r in buckets):
                if b > horizon:
                    return found
                n = want - len(found)
                if after is not None and b == after[0]:
                    rows = await self._run("changes_after", user_id, b, after[1], after[2], n)
                else:
                    rows = await self._run("changes_first", user_id, b, n)
                for row in rows:
                    if row["changed_at_ms"] > horizon:
                        return found
                    found.append(row)
                if len(found) >= want:
                    return found
            if len(buckets) < _BUCKETS_PER_READ:
                break
            lower = buckets[-1]["bucket_ms"] + 1
        return found

    async def _hydrate(self, user_id: str, rows: list[Row]) -> list[history_pb2.Change | None]:
        """The changes with their entities as they are now, one per row; None for a change to
        what was deleted since."""
        ids = list(dict.fromkeys(r["conversation_id"] for r in rows))
        gate = asyncio.Semaphore(_HYDRATE_CONCURRENCY)

        async def read(name: str, *params: Any) -> list[Row]:
            async with gate:
                return await self._run(name, *params)

        canonical = await asyncio.gather(*(read("conversation_get", cid) for cid in ids))
        alive = {
            cid: _conversation(cid, found[0])
            for cid, found in zip(ids, canonical, strict=True)
            if found and found[0]["user_id"] == user_id and found[0]["deleted_at_ms"] is None
        }

        async def message_of(row: Row) -> Row | None:
            if row["kind"] in CONVERSATION_KINDS or row["conversation_id"] not in alive or not row["message_id"]:
                return None
            found = await read(
                "message_get", row["conversation_id"], row["message_bucket_ms"], row["message_created_at_ms"],
                row["message_id"],
            )  # fmt: skip
            return found[0] if found else None

        messages = await asyncio.gather(*(message_of(r) for r in rows))
        changes: list[history_pb2.Change | None] = []
        for row, message in zip(rows, messages, strict=True):
            change = history_pb2.Change(
                kind=row["kind"], conversation_id=row["conversation_id"], changed_at_ms=row["changed_at_ms"]
            )
            if row["kind"] == history_pb2.CHANGE_KIND_CONVERSATION_DELETED:
                changes.append(change)
            elif row["kind"] in CONVERSATION_KINDS and row["conversation_id"] in alive:
                change.conversation.CopyFrom(alive[row["conversation_id"]])
                changes.append(change)
            elif message is not None:
                change.message.CopyFrom(_message(message))
                changes.append(change)
            else:
                changes.append(None)
        return changes


def listed_at(row: Row) -> int:
    """Where a conversation's row in the list is: its listed time (rows written before
    migration 3 have none, and sit at their activity time)."""
    listed = row.get("listed_at_ms")
    return int(listed if listed is not None else row["updated_at_ms"] or 0)


def _conversation(conversation_id: str, row: Row) -> history_pb2.Conversation:
    return history_pb2.Conversation(
        id=conversation_id,
        user_id=row["user_id"],
        title=row["title"] or "",
        created_at_ms=row["created_at_ms"] or 0,
        updated_at_ms=row["updated_at_ms"] or 0,
    )


def _message(row: Row) -> history_pb2.Message:
    return history_pb2.Message(
        id=row["message_id"],
        conversation_id=row["conversation_id"],
        role=row["role"] or "",
        content=row["content"] or "",
        status=row["status"] or history_pb2.MESSAGE_STATUS_UNSPECIFIED,
        model=row["model"] or "",
        reply_to_id=row["reply_to_id"] or "",
        usage=chat_pb2.Usage(
            input_tokens=row["input_tokens"] or 0,
            output_tokens=row["output_tokens"] or 0,
            cost_micros=row["cost_micros"] or 0,
        ),
        created_at_ms=row["created_at_ms"],
    )
