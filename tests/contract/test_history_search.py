"""Conversation search on every store: what a user finds, in what order, and never more than
their own, live conversations; bounded by the store's caps."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest
from parley_history.search import SearchCaps
from parley_history.store import HistoryStore
from tests.support.history_stores import BUCKET_MS

DONE = history_pb2.MESSAGE_STATUS_COMPLETE


def found(hits: list[history_pb2.SearchHit]) -> list[tuple[str, str]]:
    return [(h.conversation.id, h.message_id) for h in hits]


async def test_message_text_is_found_whatever_its_case_after_unicode_folding(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "travel", 1)
    await store.append_message(alice, c1, "m1", "user", "Which road to MÜNCHEN?", 2)
    await store.complete_message(
        alice, c1, "r1", "m1", "Take the Hauptstraße, then\nturn left.", DONE, "demo", chat_pb2.Usage(), 3
    )
    for query in ("münchen", "MÜNCHEN", "hauptstrasse", "HAUPTSTRASSE, THEN", "turn LEFT."):
        hits = await store.search_conversations(alice, query, 10)
        assert len(hits) == 1, query
        assert hits[0].conversation.id == c1 and hits[0].conversation.title == "travel"
    hit = (await store.search_conversations(alice, "strasse", 10))[0]
    assert hit.message_id == "r1"
    # The snippet is the stored text (not its folded form), on one line.
    assert hit.snippet == "Take the Hauptstraße, then turn left."
    assert (await store.search_conversations(alice, "münchen", 10))[0].message_id == "m1"
    assert await store.search_conversations(alice, "berlin", 10) == []


async def test_a_title_match_names_no_message(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "Tax return 2024", 1)
    await store.append_message(alice, c1, "m1", "user", "about my TAX RETURN", 2)
    hits = await store.search_conversations(alice, "tax return", 10)
    assert found(hits) == [(c1, "")] and hits[0].snippet == ""


async def test_hits_come_latest_activity_first_each_conversation_once(store: HistoryStore, ns: str) -> None:
    alice = f"alice-{ns}"
    old, middle, new = f"old-{ns}", f"middle-{ns}", f"new-{ns}"
    await store.create_conversation(alice, old, "", 100)
    await store.create_conversation(alice, middle, "", 200)
    await store.create_conversation(alice, new, "", 300)
    await store.create_conversation(alice, f"other-{ns}", "", 400)
    await store.append_message(alice, old, "o1", "user", "a kiwi", 500)
    await store.append_message(alice, new, "n1", "user", "kiwi one", 600)
    await store.append_message(alice, new, "n2", "user", "kiwi two", 700)
    await store.append_message(alice, new, "n3", "user", "no fruit here", 800)
    await store.append_message(alice, middle, "x1", "user", "KIWI", 900)
    await store.append_message(alice, f"other-{ns}", "p1", "user", "pear", 1000)
    hits = await store.search_conversations(alice, "kiwi", 10)
    # The newest matching message of each conversation.
    assert found(hits) == [(middle, "x1"), (new, "n2"), (old, "o1")]
    assert [h.conversation.updated_at_ms for h in hits] == [900, 800, 500]
    assert found(await store.search_conversations(alice, "kiwi", 2)) == [(middle, "x1"), (new, "n2")]


async def test_a_user_finds_only_their_own_conversations(store: HistoryStore, ns: str) -> None:
    alice, bob = f"alice-{ns}", f"bob-{ns}"
    await store.create_conversation(alice, f"a-{ns}", "alice's plans", 1)
    await store.append_message(alice, f"a-{ns}", "m1", "user", "the secret plan", 2)
    await store.create_conversation(bob, f"b-{ns}", "", 3)
    await store.append_message(bob, f"b-{ns}", "m1", "user", "bob's own plan", 4)
    assert found(await store.search_conversations(bob, "plan", 10)) == [(f"b-{ns}", "m1")]
    assert await store.search_conversations(bob, "secret", 10) == []
    assert await store.search_conversations(bob, "alice", 10) == []
    assert found(await store.search_conversations(alice, "plan", 10)) == [(f"a-{ns}", "")]


async def test_a_deleted_conversation_is_never_found(store: HistoryStore, ns: str) -> None:
    alice, kept, gone = f"alice-{ns}", f"kept-{ns}", f"gone-{ns}"
    await store.create_conversation(alice, kept, "", 1)
    await store.append_message(alice, kept, "m1", "user", "a mango", 2)
    await store.create_conversation(alice, gone, "mango title", 3)
    await store.append_message(alice, gone, "m2", "user", "a mango too", 4)
    assert found(await store.search_conversations(alice, "mango", 10)) == [(gone, ""), (kept, "m1")]
    await store.delete_conversation(alice, gone, 5)
    assert found(await store.search_conversations(alice, "mango", 10)) == [(kept, "m1")]


async def test_the_query_is_trimmed_and_bounded(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    long_word = "x" * 200
    await store.create_conversation(alice, c1, "", 1)
    await store.append_message(alice, c1, "m1", "user", f"say {long_word} twice", 2)
    assert found(await store.search_conversations(alice, f"  \n{long_word}\t ", 10)) == [(c1, "m1")]
    for query in ("", "   ", "\n\t", long_word + "x"):
        with pytest.raises(InvalidRequest) as refused:
            await store.search_conversations(alice, query, 10)
        assert refused.value.code == "invalid_query"


async def test_the_snippet_is_the_text_around_the_first_match(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    text = "a" * 500 + " FIRST needle here " + "b" * 500 + " needle again"
    await store.create_conversation(alice, c1, "", 1)
    await store.append_message(alice, c1, "m1", "user", text, 2)
    snippet = (await store.search_conversations(alice, "needle", 10))[0].snippet
    assert len(snippet) <= 160
    assert "FIRST needle here" in snippet
    assert snippet.startswith("…") and snippet.endswith("…")


async def test_old_messages_are_searched_across_buckets_and_pages(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 0)
    # The match is the oldest of 130 messages spread over many time buckets: past the first
    # read of a conversation and a full page after it.
    await store.append_message(alice, c1, "m000", "user", "the walrus", 1)
    for start in range(1, 130, 16):
        await asyncio.gather(
            *(
                store.append_message(alice, c1, f"m{i:03d}", "user", f"line {i}", i * BUCKET_MS // 4)
                for i in range(start, min(start + 16, 130))
            )
        )
    assert found(await store.search_conversations(alice, "walrus", 10)) == [(c1, "m000")]


async def test_a_search_reads_no_more_than_its_caps(store: HistoryStore, ns: str) -> None:
    alice, old, busy = f"alice-{ns}", f"old-{ns}", f"busy-{ns}"
    await store.create_conversation(alice, old, "", 1)
    await store.append_message(alice, old, "m1", "user", "an otter", 2)
    await store.create_conversation(alice, busy, "", 3)
    for i in range(6):
        await store.append_message(alice, busy, f"b{i}", "user", f"chatter {i}", 10 + i)
    assert found(await store.search_conversations(alice, "otter", 10)) == [(old, "m1")]

    defaults = store.search_caps
    try:
        # Six messages of the newer conversation use up the budget before the older one's turn.
        store.search_caps = dataclasses.replace(defaults, messages=6)
        assert await store.search_conversations(alice, "otter", 10) == []
        store.search_caps = dataclasses.replace(defaults, messages=7)
        assert found(await store.search_conversations(alice, "otter", 10)) == [(old, "m1")]
        # Characters count too: "chatter N" is 9 each.
        store.search_caps = dataclasses.replace(defaults, characters=6 * 9 + 7)
        assert await store.search_conversations(alice, "otter", 10) == []
        store.search_caps = dataclasses.replace(defaults, characters=6 * 9 + 8)
        assert found(await store.search_conversations(alice, "otter", 10)) == [(old, "m1")]
        # Conversations looked at: the newest one only.
        store.search_caps = SearchCaps(conversations=1)
        assert await store.search_conversations(alice, "otter", 10) == []
        assert found(await store.search_conversations(alice, "chatter", 10)) == [(busy, "b5")]
    finally:
        store.search_caps = defaults
