"""Conversation search, one algorithm for every store: a bounded scan of the user's own data.

Neither store can answer "which conversations hold this text, case-insensitively" from an
index: SQLite's LIKE folds ASCII only, and Cassandra 5.0's storage-attached indexes match whole
values or analyzed tokens, never a substring (LIKE is not supported on them; SASI, which had it,
is experimental and off by default). So a search walks the user's conversations as the list
shows them, latest activity first, and reads each one's messages newest first, comparing after
Unicode case folding (`str.casefold`: "STRASSE" finds "Straße"). It stops at the limit, or when
it has looked at `SearchCaps` conversations, messages or characters: a search costs at most
that much, however much history the user has, and older conversations past the caps are not
found.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from parley.v1 import history_pb2
from parley_common.errors import InvalidRequest, NotFound

MAX_QUERY = 200
DEFAULT_HITS = 20
MAX_HITS = 50
# Characters of a message's text around its first match, ellipses included.
SNIPPET_CHARS = 160
# Conversations listed (and their first messages read, side by side) per round of the scan.
_BATCH = 16
# Messages read per conversation at first (most conversations are short), then per page.
_FIRST_CHUNK = 20
_CHUNK = 100
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True)
class SearchCaps:
    """The most one search reads: conversations looked at, messages and characters compared."""

    conversations: int = 500
    messages: int = 5_000
    characters: int = 8_000_000


DEFAULT_SEARCH_CAPS = SearchCaps()


MessagePage = tuple[list[history_pb2.Message], str]
# (user_id, cursor, limit): a page of the list, latest activity first, and the next cursor.
ListConversations = Callable[[str, str, int], Awaitable[tuple[list[history_pb2.Conversation], str]]]
# (user_id, conversation_id, before, limit): messages newest first (id and content are what
# search reads) and the cursor of older ones; NotFound when the conversation is gone.
ReadMessages = Callable[[str, str, str, int], Awaitable[MessagePage]]


def search_query(query: str) -> str:
    """The query as searched: trimmed, 1..MAX_QUERY characters; else InvalidRequest."""
    trimmed = query.strip()
    if not trimmed or len(trimmed) > MAX_QUERY:
        raise InvalidRequest(f"query must be 1..{MAX_QUERY} characters once trimmed", code="invalid_query")
    return trimmed


def hits_limit(limit: int) -> int:
    return DEFAULT_HITS if limit <= 0 else min(limit, MAX_HITS)


class Needle:
    """A query compared after Unicode case folding."""

    def __init__(self, query: str) -> None:
        self.folded = query.casefold()

    def found_in(self, text: str) -> bool:
        return self.folded in text.casefold()

    def snippet(self, text: str, width: int = SNIPPET_CHARS) -> str:
        """Up to `width` characters of `text` around the first match (an ellipsis marks each
        cut), whitespace shown as spaces; '' when it does not match."""
        folded = text.casefold()
        at = folded.find(self.folded)
        if at < 0:
            return ""
        if len(folded) == len(text):
            # No character folded into several (as "ß" into "ss"): positions are the same.
            start, end = at, at + len(self.folded)
        else:
            start = _source_index(text, at)
            end = _source_index(text, at + len(self.folded) - 1) + 1
        room = width - 2  # for the ellipses
        if end - start >= room:
            first, last = start, start + room
        else:
            # A third of the context before the match, the rest after it.
            first = max(0, start - (room - (end - start)) // 3)
            last = min(len(text), first + room)
            first = max(0, last - room)
        piece = _WHITESPACE.sub(" ", text[first:last])
        return ("…" if first > 0 else "") + piece + ("…" if last < len(text) else "")


def _source_index(text: str, folded_at: int) -> int:
    """The index in `text` of the character whose case folding holds position `folded_at` of
    `text.casefold()`. Folding is per character and never shortens one, so the folded length of
    a prefix grows with it: a binary search over prefixes, each folded at C speed."""
    low, high = 0, min(folded_at, len(text) - 1)
    while low < high:
        middle = (low + high) // 2
        if len(text[: middle + 1].casefold()) > folded_at:
            high = middle
        else:
            low = middle + 1
    return low


@dataclass
class _Budget:
    caps: SearchCaps
    conversations: int = 0
    messages: int = 0
    characters: int = 0
    spent: bool = False

    def messages_left(self) -> int:
        return max(0, self.caps.messages - self.messages)

    def take(self, message: history_pb2.Message) -> bool:
        """Count one message compared; False (and spent from then on) past a cap."""
        if self.messages + 1 > self.caps.messages or self.characters + len(message.content) > self.caps.characters:
            self.spent = True
            return False
        self.messages += 1
        self.characters += len(message.content)
        return True


async def _messages(read: ReadMessages, user_id: str, conversation_id: str, before: str, limit: int) -> MessagePage:
    try:
        return await read(user_id, conversation_id, before, limit)
    except NotFound:
        return [], ""  # deleted since it was listed


async def search_conversations(
    list_conversations: ListConversations,
    read_messages: ReadMessages,
    user_id: str,
    query: str,
    limit: int,
    caps: SearchCaps,
) -> list[history_pb2.SearchHit]:
    """The user's conversations whose title or any message holds `query` (case-folded), latest
    activity first, each once: a title match has no message; otherwise the newest message that
    matches, with a snippet around its first match. Looks at no more than `caps` allows."""
    needle = Needle(search_query(query))
    limit = hits_limit(limit)
    budget = _Budget(caps)
    hits: list[history_pb2.SearchHit] = []
    cursor = ""
    while len(hits) < limit and not budget.spent and budget.messages_left() > 0:
        want = min(_BATCH, caps.conversations - budget.conversations)
        if want <= 0:
            break
        page, cursor = await list_conversations(user_id, cursor, want)
        # (A page may come back short, even empty, with a cursor: Cassandra skips stale list
        # rows. Counting such a round as one keeps the scan finite whatever the list holds.)
        budget.conversations += max(1, len(page))
        by_title = {c.id for c in page if needle.found_in(c.title)}
        # The first messages of the others, read side by side; further pages one conversation
        # at a time, in list order, while the budget lasts.
        others = [c for c in page if c.id not in by_title]
        first = min(_FIRST_CHUNK, budget.messages_left())
        chunks = await asyncio.gather(*(_messages(read_messages, user_id, c.id, "", first) for c in others))
        firsts = {c.id: chunk for c, chunk in zip(others, chunks, strict=True)}
        for conversation in page:
            if conversation.id in by_title:
                hits.append(history_pb2.SearchHit(conversation=conversation))
            else:
                found = await _newest_match(
                    read_messages, user_id, conversation.id, needle, budget, firsts[conversation.id]
                )
                if found is not None:
                    hits.append(
                        history_pb2.SearchHit(
                            conversation=conversation, message_id=found.id, snippet=needle.snippet(found.content)
                        )
                    )
            if len(hits) >= limit or budget.spent:
                break
        if not cursor:
            break
    # The list's order within a page is exact; across pages a store may place a conversation
    # by where its list row is, so the hits are put in activity order once more.
    hits.sort(key=lambda h: (h.conversation.updated_at_ms, h.conversation.id), reverse=True)
    return hits


async def _newest_match(
    read_messages: ReadMessages,
    user_id: str,
    conversation_id: str,
    needle: Needle,
    budget: _Budget,
    first: tuple[list[history_pb2.Message], str],
) -> history_pb2.Message | None:
    page, before = first
    while True:
        for message in page:
            if not budget.take(message):
                return None
            if needle.found_in(message.content):
                return message
        if not before or budget.spent:
            return None
        left = budget.messages_left()
        if left <= 0:
            return None
        page, before = await _messages(read_messages, user_id, conversation_id, before, min(_CHUNK, left))
