"""The production history store on Cassandra (the data model: docs/history-data-model.md).

Writes are safe to retry and to race: a message's key is fixed by the lightweight transaction
that claims its id, small rows that belong together (activity, list position, change) go in
one logged batch, and readers check list rows against the canonical conversation row, so a
half-finished or raced write is finished by the next try and never shows twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from cassandra.query import UNSET_VALUE, PreparedStatement

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import Gone, InvalidRequest, NotFound, ParleyError

from .cassandra_cql import prepare_all
from .cassandra_session import CassandraSession, Row
from .search import DEFAULT_SEARCH_CAPS, SearchCaps, search_conversations
from .store import (
    ANY_PARENT,
    CONVERSATION_KINDS,
    DEFAULT_SYNC_PAGE,
    MAX_PAGE_BYTES,
    Clock,
    HistoryStore,
    RawPage,
    SyncPage,
    answer_not_stored,
    bucket_start,
    changes_within,
    clamp_limit,
    cursor_int,
    decode_cursor,
    encode_cursor,
    fit_bytes,
    message_change_kind,
    message_not_found,
    walk_path,
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
# The most steps from a message down to the newest leaf below it (PUT current).
_MAX_DESCENT = 10_000
# Parents asked for in one read of message_children.
_PARENTS_PER_READ = 100


def _not_found() -> NotFound:
    return NotFound("conversation not found", code="conversation_not_found")


class CassandraHistoryStore(HistoryStore):
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
        await self._run("children_drop", conversation_id)
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

    async def _keys(self, conversation_id: str) -> list[tuple[int, Row]]:
        """Every message's keys (no text), newest first."""
        return await self._message_rows(conversation_id, None, 2**31 - 1, "message_keys_first", "message_keys_before")

    async def _upgrade(self, conversation_id: str, conversation: Row) -> Row:
        """A conversation written before migration 5 gets explicit parents (each message's
        parent is the one before it in time), its children rows and its leaf (the newest
        message). Idempotent: a retry writes the same values."""
        keys = await self._keys(conversation_id)
        writes = []
        olders: list[tuple[int, Row] | None] = [*keys[1:], None] if keys else []
        for (bucket, row), older in zip(keys, olders, strict=True):
            if row["parent_id"] is not None:
                continue
            parent = older[1]["message_id"] if older is not None else ""
            key = (conversation_id, bucket, row["created_at_ms"], row["message_id"])
            writes.append(self._run("message_set_parent", parent, *key))
            writes.append(
                self._run(
                    "child_insert", conversation_id, parent, row["created_at_ms"], row["message_id"],
                    row["role"] or "", bucket,
                )
            )  # fmt: skip
        for start in range(0, len(writes), _HYDRATE_CONCURRENCY):
            await asyncio.gather(*writes[start : start + _HYDRATE_CONCURRENCY])
        leaf = keys[0][1]["message_id"] if keys else ""
        if keys:
            await self._run("conversation_leaf", leaf, conversation_id)
        return {**conversation, "current_message_id": leaf}

    async def _locate(self, conversation_id: str, message_id: str) -> tuple[int, int] | None:
        """(bucket, created_at) of a message: from its claim, or (claims expire after 30 days)
        by walking the conversation's keys."""
        claim = await self._run("message_claim_get", conversation_id, message_id)
        if claim and claim[0]["continues_id"] is None and claim[0]["created_at_ms"] is not None:
            return claim[0]["bucket_ms"], claim[0]["created_at_ms"]
        for bucket, row in await self._keys(conversation_id):
            if row["message_id"] == message_id:
                return bucket, row["created_at_ms"]
        return None

    async def _read(self, conversation_id: str, message_id: str) -> tuple[int, Row] | None:
        at = await self._locate(conversation_id, message_id)
        if at is None:
            return None
        rows = await self._run("message_get", conversation_id, at[0], at[1], message_id)
        return (at[0], rows[0]) if rows else None

    async def _current(self, user_id: str, conversation_id: str) -> Row:
        """The conversation's row, its messages upgraded to explicit parents first if need be."""
        conversation = await self._conversation_row(user_id, conversation_id)
        if conversation.get("current_message_id") is None:
            conversation = await self._upgrade(conversation_id, conversation)
        return conversation

    async def _store_message(
        self, user_id: str, message: history_pb2.Message, parent_id: str | None = None
    ) -> tuple[history_pb2.Message, bool]:
        conversation = await self._current(user_id, message.conversation_id)
        cid, mid = message.conversation_id, message.id
        leaf = conversation.get("current_message_id") or ""
        if message.reply_to_id:
            parent_id = message.reply_to_id
        elif parent_id is None:
            parent_id = leaf
        if parent_id and parent_id != mid:
            at = await self._locate(cid, parent_id)
            if at is None:
                if not message.reply_to_id:
                    raise message_not_found()
                parent_id = ""
            else:
                # Dated after its parent: a path read newest first meets the child first.
                message.created_at_ms = max(message.created_at_ms, at[1] + 1)
        message.parent_id = parent_id
        bucket = bucket_start(message.created_at_ms, self.bucket_ms)
        # The list's first row, read beside the claim: a conversation already at the top of the
        # list stays where it is (each move is a delete and an insert, and leaves a tombstone).
        claimed, top = await asyncio.gather(
            self._run("message_claim", cid, mid, bucket, message.created_at_ms), self._run("listed_first", user_id, 1)
        )
        claim = claimed[0]
        created = bool(claim["[applied]"])
        if not created and claim.get("continues_id"):
            return await self._apply_continuation(user_id, message, claim), False
        if not created:
            # Stored before (or being stored): the first claim fixed the key.
            bucket, message.created_at_ms = claim["bucket_ms"], claim["created_at_ms"]
            if claim.get("recorded"):
                rows = await self._run("message_get", cid, bucket, message.created_at_ms, mid)
                if not rows:
                    raise _not_found()  # deleted with its conversation meanwhile
                return (await self._with_siblings(cid, [_message(rows[0])]))[0], False
            # The first writer stopped before finishing (or is still writing): finish with the
            # same key, at a write timestamp just below the claimer's, so that its row, if it
            # lands, is the one kept.
        written_at = message.created_at_ms * 1000 + (1 if created else 0)
        u = message.usage
        await self._run(
            "message_insert",
            cid, bucket, message.created_at_ms, mid, message.role, message.content, int(message.status),
            message.model, message.reply_to_id, u.input_tokens, u.output_tokens, u.cost_micros,
            message.parent_id, list(message.media_ids) or UNSET_VALUE, message.finish_reason, written_at,
        )  # fmt: skip
        items: Items = [
            (self.q["message_bucket_insert"], (cid, bucket)),
            (self.q["child_insert"], (cid, message.parent_id, message.created_at_ms, mid, message.role, bucket)),
        ]
        if not message.reply_to_id or leaf == message.parent_id:
            items.append((self.q["conversation_leaf"], (mid, cid)))
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
                return (await self._with_siblings(cid, [_message(rows[0])]))[0], False
        return (await self._with_siblings(cid, [message]))[0], created

    async def _apply_continuation(self, user_id: str, answer: history_pb2.Message, claim: Row) -> history_pb2.Message:
        """The continued message with `answer` appended: set to its text when the continuation
        began plus the new text (so a retry writes the same), then the claim is recorded."""
        cid = answer.conversation_id
        key = (cid, claim["bucket_ms"], claim["created_at_ms"], claim["continues_id"])
        rows = await self._run("message_get", *key)
        if not rows:
            raise message_not_found()
        if not claim.get("recorded"):
            target = rows[0]
            u = answer.usage
            failed = answer.status == history_pb2.MESSAGE_STATUS_FAILED
            await self._run(
                "message_continue",
                (target["content"] or "")[: claim["base_chars"] or 0] + answer.content,
                # A continuation that failed leaves the answer as it was (and so in prompts).
                target["status"] if failed else int(answer.status),
                (target["finish_reason"] or "") if failed else answer.finish_reason,
                (claim["base_input_tokens"] or 0) + u.input_tokens,
                (claim["base_output_tokens"] or 0) + u.output_tokens,
                (claim["base_cost_micros"] or 0) + u.cost_micros,
                *key,
            )  # fmt: skip
            await self.db.batch(
                [
                    *self._change(user_id, history_pb2.CHANGE_KIND_MESSAGE_COMPLETED, cid, key[3], key[1], key[2]),
                    (self.q["message_recorded"], (cid, answer.id)),
                ]
            )
            rows = await self._run("message_get", *key)
        return (await self._with_siblings(cid, [_message(rows[0])]))[0]

    async def _with_siblings(
        self, conversation_id: str, messages: list[history_pb2.Message]
    ) -> list[history_pb2.Message]:
        """`messages` with their sibling_ids (messages written before migration 5 have none
        recorded: themselves only)."""
        children = await self._children(conversation_id, {m.parent_id for m in messages if m.parent_id != ANY_PARENT})
        for message in messages:
            if message.parent_id == ANY_PARENT:
                message.parent_id = ""  # not known outside a walk of the path: shown as none
                message.sibling_ids[:] = [message.id]
                continue
            same = [mid for mid, role in children.get(message.parent_id, []) if role == message.role]
            message.sibling_ids[:] = same if message.id in same else [message.id]
        return messages

    async def _children(self, conversation_id: str, parents: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """Each parent's children as (id, role), oldest first."""
        wanted = sorted(set(parents))
        found: dict[str, list[tuple[int, str, str]]] = {}
        for start in range(0, len(wanted), _PARENTS_PER_READ):
            for row in await self._run("children_of", conversation_id, wanted[start : start + _PARENTS_PER_READ]):
                found.setdefault(row["parent_id"], []).append(
                    (row["created_at_ms"], row["message_id"], row["role"] or "")
                )
        return {p: [(mid, role) for _, mid, role in sorted(rows)] for p, rows in found.items()}

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int, *, leaf_id: str = ""
    ) -> tuple[list[history_pb2.Message], str]:
        conversation = await self._conversation_row(user_id, conversation_id)
        leaf = leaf_id or conversation.get("current_message_id") or ""
        start = ""
        if leaf and not before:
            at = await self._locate(conversation_id, leaf)
            if at is None:
                if leaf_id:
                    raise message_not_found()
                leaf = ""
            else:
                # Just newer than the leaf, so the walk starts at it.
                start = encode_cursor(at[0], at[1], leaf + "\U0010ffff")

        async def raw(cursor: str, n: int) -> RawPage:
            after: tuple[int, int, str] | None = None
            if cursor:
                bucket, created, mid = decode_cursor(cursor, 3)
                after = (cursor_int(bucket), cursor_int(created), mid)
            found = await self._message_rows(conversation_id, after, n + 1, "messages_first", "messages_before")
            page = [(_message(r), encode_cursor(b, r["created_at_ms"], r["message_id"])) for b, r in found[:n]]
            return page, page[-1][1] if len(found) > n else ""

        page, cursor = await walk_path(raw, leaf, start, before, limit)
        return await self._with_siblings(conversation_id, page), cursor

    async def require_stored(self, user_id: str, conversation_id: str, message_id: str) -> None:
        # Recorded, not only found: a message's row lands before the batch that makes it the
        # conversation's leaf (and marks its claim recorded); a message appended in between
        # would take the leaf before it as its parent and sit beside it. A continuation's claim
        # is recorded once it was appended to the message it continues.
        await self._conversation_row(user_id, conversation_id)
        claim = await self._run("message_claim_get", conversation_id, message_id)
        if not (claim and claim[0]["recorded"]):
            raise answer_not_stored()

    async def get_message(self, user_id: str, conversation_id: str, message_id: str) -> history_pb2.Message:
        await self._current(user_id, conversation_id)
        claim = await self._run("message_claim_get", conversation_id, message_id)
        if claim and claim[0]["continues_id"] is not None:
            # A continuation's response id: the message it was appended to, once it was.
            c = claim[0]
            rows = await self._run(
                "message_get", conversation_id, c["bucket_ms"], c["created_at_ms"], c["continues_id"]
            )
            if not (c["recorded"] and rows):
                raise message_not_found()
            return (await self._with_siblings(conversation_id, [_message(rows[0])]))[0]
        found = await self._read(conversation_id, message_id)
        if found is None:
            raise message_not_found()
        return (await self._with_siblings(conversation_id, [_message(found[1])]))[0]

    async def set_current(
        self, user_id: str, conversation_id: str, message_id: str, exact: bool, now_ms: int
    ) -> history_pb2.Conversation:
        conversation = await self._current(user_id, conversation_id)
        if await self._locate(conversation_id, message_id) is None:
            raise message_not_found()
        leaf = message_id
        for _ in range(0 if exact else _MAX_DESCENT):
            below = (await self._children(conversation_id, [leaf])).get(leaf)
            if not below:
                break
            leaf = below[-1][0]
        if leaf != conversation.get("current_message_id"):
            await self.db.batch(
                [
                    (self.q["conversation_leaf"], (leaf, conversation_id)),
                    *self._change(user_id, history_pb2.CHANGE_KIND_CONVERSATION_UPDATED, conversation_id, leaf),
                ]
            )
        current = _conversation(conversation_id, conversation)
        current.current_message_id = leaf
        return current

    async def begin_continuation(
        self, user_id: str, conversation_id: str, message_id: str, response_id: str
    ) -> tuple[history_pb2.Message, int, bool]:
        await self._current(user_id, conversation_id)
        found = await self._read(conversation_id, message_id)
        if found is None:
            raise message_not_found()
        bucket, row = found
        target = _message(row)
        if target.role != "assistant":
            raise InvalidRequest("only an answer can be continued", code="not_continuable")
        u = target.usage
        claimed = await self._run(
            "continuation_claim", conversation_id, response_id, bucket, target.created_at_ms, message_id,
            len(target.content), u.input_tokens, u.output_tokens, u.cost_micros,
        )  # fmt: skip
        claim = claimed[0]
        if claim["[applied]"]:
            return (await self._with_siblings(conversation_id, [target]))[0], len(target.content), False
        if claim.get("continues_id") != message_id:
            raise InvalidRequest("this response continues another message", code="invalid_request")
        return (
            (await self._with_siblings(conversation_id, [target]))[0],
            int(claim.get("base_chars") or 0),
            bool(claim.get("recorded")),
        )

    async def conversation_media(self, user_id: str, conversation_id: str) -> list[str]:
        await self._conversation_row(user_id, conversation_id)
        keys = await self._keys(conversation_id)
        return list(dict.fromkeys(m for _, row in keys for m in row["media_ids"] or []))

    async def _all_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int, *, max_bytes: int = MAX_PAGE_BYTES
    ) -> tuple[list[history_pb2.Message], str]:
        """Every message of every version, newest first (sync's snapshot)."""
        limit = clamp_limit(limit)
        after: tuple[int, int, str] | None = None
        if before:
            bucket, created, mid = decode_cursor(before, 3)
            after = (cursor_int(bucket), cursor_int(created), mid)
        await self._conversation_row(user_id, conversation_id)
        found = await self._message_rows(conversation_id, after, limit + 1, "messages_first", "messages_before")
        page = fit_bytes([_message(r) for _, r in found[:limit]], max_bytes)
        await self._with_siblings(conversation_id, page)
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
                    current_message_id=conversation.current_message_id,
                )
                changes.append(change)
                size += change.ByteSize()
                current, messages_before = conversation.id, ""
                continue
            try:
                page, more = await self._all_messages(
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
                if changes and changes[0].conversation_id == current:
                    change.current_message_id = changes[0].current_message_id
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
        by_conversation: dict[str, list[history_pb2.Message]] = {}
        parsed = [None if m is None else _message(m) for m in messages]
        for m in parsed:
            if m is not None:
                by_conversation.setdefault(m.conversation_id, []).append(m)
        await asyncio.gather(*(self._with_siblings(cid, ms) for cid, ms in by_conversation.items()))
        changes: list[history_pb2.Change | None] = []
        for row, message in zip(rows, parsed, strict=True):
            change = history_pb2.Change(
                kind=row["kind"], conversation_id=row["conversation_id"], changed_at_ms=row["changed_at_ms"]
            )
            if row["conversation_id"] in alive:
                change.current_message_id = alive[row["conversation_id"]].current_message_id
            if row["kind"] == history_pb2.CHANGE_KIND_CONVERSATION_DELETED:
                changes.append(change)
            elif row["kind"] in CONVERSATION_KINDS and row["conversation_id"] in alive:
                change.conversation.CopyFrom(alive[row["conversation_id"]])
                changes.append(change)
            elif message is not None:
                change.message.CopyFrom(message)
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
        current_message_id=row.get("current_message_id") or "",
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
        # A row written before migration 5 has no parent: the message before it in time.
        parent_id=ANY_PARENT if row.get("parent_id") is None else row["parent_id"],
        media_ids=row.get("media_ids") or [],
        finish_reason=row.get("finish_reason") or "",
    )
