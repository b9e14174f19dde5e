"""The history store interface every backend implements (and the contract tests exercise).

Both backends order messages by (created_at_ms, message id), newest first, and conversations
by (updated_at_ms, conversation id), latest activity first. Cursors are opaque to callers and
specific to a backend.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest, NotFound

from .search import SearchCaps

MAX_PAGE = 200
# The archive policy clients rely on: the newest 50 messages first, older ones on demand.
DEFAULT_MESSAGE_PAGE = 50
DEFAULT_SYNC_PAGE = 100
# A page is cut short (with its cursor) rather than pass this many bytes of messages: under
# gRPC's default 4 MiB message limit with room to spare, whatever the messages' sizes.
MAX_PAGE_BYTES = 3 * 1024 * 1024
# Numbers in cursors (times, sequence numbers) are int64 in both stores (SQLite INTEGER,
# Cassandra bigint); a larger one cannot be a position, and binding it would fail.
MAX_CURSOR_INT = 2**63 - 1
MAX_CURSOR_DIGITS = len(str(MAX_CURSOR_INT))

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class SyncPage:
    changes: list[history_pb2.Change]
    next_cursor: str
    has_more: bool


class HistoryStore(Protocol):
    """Backends subclass it: append_message and complete_message build the message here, once,
    and hand it to the backend's _store_message."""

    # What one search_conversations may read (search.py).
    search_caps: SearchCaps

    async def create_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation: ...

    async def get_conversation(self, user_id: str, conversation_id: str) -> history_pb2.Conversation:
        """The conversation, or NotFound when it does not exist, was deleted, or is another user's."""
        ...

    async def list_conversations(
        self, user_id: str, cursor: str, limit: int
    ) -> tuple[list[history_pb2.Conversation], str]:
        """Latest activity first; returns the page and the next cursor ('' at the end)."""
        ...

    async def rename_conversation(
        self, user_id: str, conversation_id: str, title: str, now_ms: int
    ) -> history_pb2.Conversation:
        """Set the title (recorded as a change for sync); NotFound as get_conversation."""
        ...

    async def delete_conversation(self, user_id: str, conversation_id: str, now_ms: int) -> None:
        """Remove the conversation and every message in it; NotFound as get_conversation."""
        ...

    async def append_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        role: str,
        content: str,
        now_ms: int,
        *,
        parent_id: str | None = None,
        media_ids: Sequence[str] = (),
    ) -> tuple[history_pb2.Message, bool]:
        """Store a message once: a repeat with the same id returns the stored one and False.

        Its parent is `parent_id` (an edit: NotFound message_not_found when the conversation
        has no such message), else the conversation's current leaf; it becomes the leaf, and is
        dated after its parent."""
        message = new_message(conversation_id, message_id, role, content, now_ms, media_ids)
        return await self._store_message(user_id, message, parent_id)

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
        """append_message, then get_messages(user_id, conversation_id, '', read): the newest
        `read` messages of the current path, which now ends at the message (a store may do both
        in one step). Returns the message, whether it was new, the page and its cursor.

        With `after_stored`, nothing is written unless require_stored finds that message stored
        (the answer the turn order waited for): answer_not_stored() otherwise."""
        if after_stored:
            await self.require_stored(user_id, conversation_id, after_stored)
        message, created = await self.append_message(
            user_id, conversation_id, message_id, role, content, now_ms, parent_id=parent_id, media_ids=media_ids
        )
        page, cursor = await self.get_messages(user_id, conversation_id, "", read)
        return message, created, page, cursor

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
        *,
        finish_reason: str = "",
    ) -> history_pb2.Message:
        """Store an assistant message's final state; a repeat leaves the first one as it is.

        Its parent is `reply_to_id`; it becomes the leaf when the leaf was that user message.
        When `message_id` was registered by begin_continuation, the content is appended to the
        continued message instead (once: a repeat changes nothing), which is returned."""
        answer = history_pb2.Message(
            id=message_id,
            conversation_id=conversation_id,
            role="assistant",
            content=content,
            status=status,
            model=model,
            reply_to_id=reply_to_id,
            parent_id=reply_to_id,
            finish_reason=finish_reason,
            usage=chat_pb2.Usage(
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_micros=usage.cost_micros
            ),
            created_at_ms=now_ms,
        )
        stored, _ = await self._store_message(user_id, answer)
        return stored

    async def _store_message(
        self, user_id: str, message: history_pb2.Message, parent_id: str | None = None
    ) -> tuple[history_pb2.Message, bool]:
        """The backend's one write of a message built by append_message or complete_message
        (their promises are its own): the stored message with its sibling_ids, and whether it
        was new."""
        ...

    async def get_messages(
        self, user_id: str, conversation_id: str, before: str, limit: int, *, leaf_id: str = ""
    ) -> tuple[list[history_pb2.Message], str]:
        """The path ending at `leaf_id` ('' = the current leaf), newest first, older than the
        cursor `before` ('' = from the leaf), each with its sibling_ids."""
        ...

    async def get_message(self, user_id: str, conversation_id: str, message_id: str) -> history_pb2.Message:
        """One message with its sibling_ids; NotFound (conversation_not_found, message_not_found).
        A continuation's response id names the message it was appended to, once it was."""
        ...

    async def require_stored(self, user_id: str, conversation_id: str, message_id: str) -> None:
        """NotFound answer_not_stored unless `message_id` is stored: here, get_message finds it
        (conversation_not_found as get_message raises it); a store may ask more of it."""
        try:
            await self.get_message(user_id, conversation_id, message_id)
        except NotFound as exc:
            if exc.code != "message_not_found":
                raise
            raise answer_not_stored() from None

    async def set_current(
        self, user_id: str, conversation_id: str, message_id: str, exact: bool, now_ms: int
    ) -> history_pb2.Conversation:
        """Make `message_id` current: the leaf becomes it (exact) or the newest descendant chain
        below it; recorded as a conversation.updated change when the leaf moved."""
        ...

    async def begin_continuation(
        self, user_id: str, conversation_id: str, message_id: str, response_id: str
    ) -> tuple[history_pb2.Message, int, bool]:
        """Register `response_id` as continuing the assistant message `message_id`: (the
        message, its length when the continuation began, whether it was applied already)."""
        ...

    async def conversation_media(self, user_id: str, conversation_id: str) -> list[str]:
        """The media ids of every user message of the conversation, each once."""
        ...

    async def sync(self, user_id: str, since: str, limit: int) -> SyncPage:
        """The user's changes after `since` ('' = from the beginning), oldest first.

        Each change carries its entity as it is now; changes to what has been deleted since
        are skipped (the deletion is not). `next_cursor` is where the next call starts."""
        ...

    async def search_conversations(self, user_id: str, query: str, limit: int) -> list[history_pb2.SearchHit]:
        """The user's conversations whose title or any message holds `query` after Unicode case
        folding, latest activity first, each once (search.py: a scan bounded by the store's
        SearchCaps). InvalidRequest unless the trimmed query is 1..200 characters."""
        ...

    async def unready(self) -> str | None:
        """None while the store answers reads and writes; else what is wrong (for /readyz)."""
        ...

    async def close(self) -> None: ...


def new_message(
    conversation_id: str, message_id: str, role: str, content: str, now_ms: int, media_ids: Sequence[str]
) -> history_pb2.Message:
    """The message append_message stores (before its store gives it a parent)."""
    return history_pb2.Message(
        id=message_id,
        conversation_id=conversation_id,
        role=role,
        content=content,
        status=history_pb2.MESSAGE_STATUS_COMPLETE,
        usage=chat_pb2.Usage(),
        created_at_ms=now_ms,
        media_ids=list(dict.fromkeys(media_ids)),
    )


def bucket_start(at_ms: int, bucket_ms: int) -> int:
    """The first millisecond of the time bucket holding `at_ms`."""
    return at_ms - at_ms % bucket_ms


def encode_cursor(*parts: str | int) -> str:
    raw = "\x1f".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int, *other_arities: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("malformed cursor", code="invalid_cursor") from None
    parts = raw.split("\x1f")
    if len(parts) != arity and len(parts) not in other_arities:
        raise InvalidRequest("malformed cursor", code="invalid_cursor")
    return parts


def cursor_int(value: str) -> int:
    """A number in a cursor: ASCII digits (str.isdigit() also accepts '²' and '٣', which int()
    refuses or reads), within int64 as both stores keep it; otherwise the cursor is not ours."""
    if not (value.isascii() and value.isdigit() and len(value) <= MAX_CURSOR_DIGITS):
        raise InvalidRequest("malformed cursor", code="invalid_cursor")
    number = int(value)
    if number > MAX_CURSOR_INT:
        raise InvalidRequest("malformed cursor", code="invalid_cursor")
    return number


def clamp_limit(limit: int, default: int = DEFAULT_MESSAGE_PAGE) -> int:
    if limit <= 0:
        return default
    return min(limit, MAX_PAGE)


def fit_bytes(messages: list[history_pb2.Message], max_bytes: int = MAX_PAGE_BYTES) -> list[history_pb2.Message]:
    """The longest head of `messages` within `max_bytes` (always at least one message)."""
    total = 0
    for i, message in enumerate(messages):
        total += message.ByteSize()
        if i and total > max_bytes:
            return messages[:i]
    return messages


def changes_within(changes: list[history_pb2.Change | None], max_bytes: int = MAX_PAGE_BYTES) -> int:
    """How many of `changes` (None: skipped, costs nothing) a page takes within `max_bytes`."""
    total, kept = 0, 0
    for i, change in enumerate(changes):
        if change is not None:
            total += change.ByteSize()
            if kept and total > max_bytes:
                return i
            kept += 1
    return len(changes)


def message_change_kind(role: str) -> history_pb2.ChangeKind.ValueType:
    return history_pb2.CHANGE_KIND_MESSAGE_COMPLETED if role == "assistant" else history_pb2.CHANGE_KIND_MESSAGE_ADDED


CONVERSATION_KINDS = frozenset(
    {
        history_pb2.CHANGE_KIND_CONVERSATION_CREATED,
        history_pb2.CHANGE_KIND_CONVERSATION_RENAMED,
        history_pb2.CHANGE_KIND_CONVERSATION_UPDATED,
    }
)


def message_not_found() -> NotFound:
    return NotFound("message not found", code="message_not_found")


def answer_not_stored() -> NotFound:
    """An append's `after_stored` message is not stored (yet): nothing was written."""
    return NotFound("the answer before this message is not stored yet", code="answer_not_stored")


# The parent of a message stored before versions existed (Cassandra rows written before
# migration 5, until their conversation is next written to): the message before it in time.
ANY_PARENT = "\x00"
_PATH = "path"
# Messages read per round while walking a path (versions off the path are read and skipped).
PATH_READ = 100
# Each message read by the walk as (message, the store's cursor just older than it).
RawPage = tuple[Sequence[tuple[history_pb2.Message, str]], str]
RawFetch = Callable[[str, int], Awaitable[RawPage]]
RawRead = Callable[[str, int], RawPage]
# The walk itself, without I/O: it yields each read it needs, (store cursor, n), is sent
# that read's RawPage, and returns the page and its cursor (walk_path and walk_path_now drive it).
PathWalk = Generator[tuple[str, int], RawPage, tuple[list[history_pb2.Message], str]]


async def walk_path(
    raw: RawFetch, leaf_id: str, start: str, before: str, limit: int, max_bytes: int = MAX_PAGE_BYTES
) -> tuple[list[history_pb2.Message], str]:
    """A page of the path ending at `leaf_id` ('' = the newest message), newest first.

    `raw(cursor, n)` reads every message of the conversation newest first (the store's own
    paging; `start` is its cursor just newer than the leaf, '' = the newest). A parent is always
    older than its child (the stores date a message after its parent), so one backward pass
    meets every message of the path: each one kept is the parent of the one kept before. The
    page's cursor holds the store's position and the parent the path goes on with."""
    walk = _walk(leaf_id, start, before, limit, max_bytes)
    try:
        cursor, n = next(walk)
        while True:
            cursor, n = walk.send(await raw(cursor, n))
    except StopIteration as done:
        result: tuple[list[history_pb2.Message], str] = done.value
        return result


def walk_path_now(
    raw: RawRead, leaf_id: str, start: str, before: str, limit: int, max_bytes: int = MAX_PAGE_BYTES
) -> tuple[list[history_pb2.Message], str]:
    """walk_path with a blocking `raw` (SQLite: the whole walk in one call on the store's thread)."""
    walk = _walk(leaf_id, start, before, limit, max_bytes)
    try:
        cursor, n = next(walk)
        while True:
            cursor, n = walk.send(raw(cursor, n))
    except StopIteration as done:
        result: tuple[list[history_pb2.Message], str] = done.value
        return result


def _walk(leaf_id: str, start: str, before: str, limit: int, max_bytes: int) -> PathWalk:
    limit = clamp_limit(limit)
    if before:
        tag, raw_cursor, expected = decode_cursor(before, 3)
        if tag != _PATH:
            raise InvalidRequest("malformed cursor", code="invalid_cursor")
    else:
        raw_cursor, expected = start, leaf_id or ANY_PARENT
    out: list[history_pb2.Message] = []
    last_at = ""
    total = 0
    legacy: history_pb2.Message | None = None
    # The newest answer to each question met off the path (see `late` below).
    answers: dict[str, tuple[history_pb2.Message, str]] = {}
    while True:
        page, more = yield raw_cursor, PATH_READ
        for message, at in page:
            if expected not in (ANY_PARENT, message.id):
                if message.role == "assistant" and message.parent_id:
                    answers.setdefault(message.parent_id, (message, at))
                continue
            if legacy is not None:
                legacy.parent_id = message.id
                legacy = None
            late = answers.pop(message.id, None) if out and out[-1].role == message.role == "user" else None
            if late is not None:
                # A question followed by a question: the answer between them reached history
                # after the second was stored (history was away while it streamed, and the turn
                # order stopped waiting for it). It is shown where the user saw it (when both
                # questions are on one page: a page that ends between them does not show it).
                total += late[0].ByteSize()
                if len(out) >= limit or total > max_bytes:
                    return out, encode_cursor(_PATH, last_at, expected)
                out.append(late[0])
                last_at = late[1]
            total += message.ByteSize()
            if len(out) >= limit or (out and total > max_bytes):
                return out, encode_cursor(_PATH, last_at, expected)
            out.append(message)
            last_at = at
            if message.parent_id == ANY_PARENT:
                message.parent_id = ""
                legacy = message
                expected = ANY_PARENT
            else:
                expected = message.parent_id
                if not expected:
                    return out, ""
        if not more:
            return out, ""
        raw_cursor = more
