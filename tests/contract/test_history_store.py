"""What every history store promises: isolation, idempotency, ordering, paging, sync."""

from __future__ import annotations

import pytest

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest, NotFound
from parley_history.store import HistoryStore, encode_cursor
from tests.support.history_stores import BUCKET_MS, TestClock

DONE = history_pb2.MESSAGE_STATUS_COMPLETE
INTERRUPTED = history_pb2.MESSAGE_STATUS_INTERRUPTED
CREATED = history_pb2.CHANGE_KIND_CONVERSATION_CREATED
RENAMED = history_pb2.CHANGE_KIND_CONVERSATION_RENAMED
DELETED = history_pb2.CHANGE_KIND_CONVERSATION_DELETED
ADDED = history_pb2.CHANGE_KIND_MESSAGE_ADDED
COMPLETED = history_pb2.CHANGE_KIND_MESSAGE_COMPLETED


async def all_messages(store: HistoryStore, user: str, conversation: str, page: int) -> list[history_pb2.Message]:
    seen: list[history_pb2.Message] = []
    cursor = ""
    while True:
        batch, cursor = await store.get_messages(user, conversation, cursor, page)
        seen += batch
        if not cursor:
            return seen


async def sync_all(store: HistoryStore, user: str, since: str, page: int) -> tuple[list[history_pb2.Change], str]:
    """Every change after `since`, page by page; and the cursor to keep."""
    changes: list[history_pb2.Change] = []
    while True:
        result = await store.sync(user, since, page)
        changes += result.changes
        assert result.next_cursor or not result.changes
        since = result.next_cursor
        if not result.has_more:
            return changes, since


def summary(changes: list[history_pb2.Change]) -> list[tuple[int, str]]:
    return [(c.kind, c.message.id if c.HasField("message") else c.conversation_id) for c in changes]


# isolation


async def test_another_users_conversation_is_not_found(store: HistoryStore, ns: str) -> None:
    alice, bob, c1 = f"alice-{ns}", f"bob-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "mine", 1)
    await store.append_message(alice, c1, "m1", "user", "secret", 2)
    usage = chat_pb2.Usage()
    for attempt in (
        store.get_conversation(bob, c1),
        store.append_message(bob, c1, "m2", "user", "hi", 3),
        store.complete_message(bob, c1, "r1", "m1", "x", DONE, "demo", usage, 4),
        store.get_messages(bob, c1, "", 10),
        store.rename_conversation(bob, c1, "taken", 5),
        store.delete_conversation(bob, c1, 6),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert (await store.list_conversations(bob, "", 10))[0] == []
    bobs = await store.sync(bob, "", 100)
    assert bobs.changes == [] and not bobs.has_more
    # Nothing bob tried changed alice's conversation.
    kept = await store.get_conversation(alice, c1)
    assert kept.title == "mine"
    assert [m.id for m in (await store.get_messages(alice, c1, "", 10))[0]] == ["m1"]


# idempotency


async def test_append_is_idempotent_on_the_message_id(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    first, created = await store.append_message(alice, c1, "m1", "user", "hi", 2)
    again, created_again = await store.append_message(alice, c1, "m1", "user", "hi", 3)
    assert created and not created_again
    assert again == first and first.created_at_ms == 2
    messages, _ = await store.get_messages(alice, c1, "", 10)
    assert [m.id for m in messages] == ["m1"]
    changes, _ = await sync_all(store, alice, "", 100)
    assert summary(changes) == [(CREATED, c1), (ADDED, "m1")], "a retry is not a second change"


async def test_complete_is_idempotent_and_keeps_the_first(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    usage = chat_pb2.Usage(input_tokens=3, output_tokens=5, cost_micros=7)
    first = await store.complete_message(alice, c1, "r1", "m1", "answer", DONE, "demo", usage, 5)
    again = await store.complete_message(alice, c1, "r1", "m1", "other", INTERRUPTED, "demo", usage, 6)
    assert again == first
    assert first.role == "assistant" and first.content == "answer" and first.status == DONE
    assert first.usage.output_tokens == 5 and first.usage.cost_micros == 7 and first.reply_to_id == "m1"
    assert [m.id for m in (await store.get_messages(alice, c1, "", 10))[0]] == ["r1"]


async def test_an_interrupted_answer_keeps_its_partial_content(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    await store.append_message(alice, c1, "m1", "user", "tell me", 2)
    await store.complete_message(alice, c1, "r1", "m1", "half an ans", INTERRUPTED, "demo", chat_pb2.Usage(), 3)
    newest = (await store.get_messages(alice, c1, "", 1))[0][0]
    assert (newest.id, newest.status, newest.content) == ("r1", INTERRUPTED, "half an ans")


# ordering and paging


async def test_messages_page_backwards_newest_first(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    for i in range(7):
        await store.append_message(alice, c1, f"m{i}", "user", str(i), 10 + i)
    seen = await all_messages(store, alice, c1, 3)
    assert [m.id for m in seen] == [f"m{i}" for i in reversed(range(7))]


async def test_a_message_is_dated_after_its_parent_whatever_its_clock_said(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    await store.append_message(alice, c1, "late", "user", "", 300)
    await store.append_message(alice, c1, "early", "user", "", 100)
    await store.append_message(alice, c1, "b", "user", "", 200)
    await store.append_message(alice, c1, "a", "user", "", 200)
    seen = await all_messages(store, alice, c1, 2)
    # Each follows the current leaf, so the path is the order they came in.
    assert [m.id for m in seen] == ["a", "b", "early", "late"]
    assert [m.created_at_ms for m in seen] == [303, 302, 301, 300]
    assert [m.parent_id for m in seen] == ["b", "early", "late", ""]


async def test_paging_crosses_time_buckets_and_skips_empty_ones(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 0)
    # 0.7 buckets apart, then a gap of many empty buckets, then two in one bucket.
    times = [i * BUCKET_MS * 7 // 10 for i in range(9)] + [BUCKET_MS * 50, BUCKET_MS * 50 + 1]
    for i, at in enumerate(times):
        await store.append_message(alice, c1, f"m{i:02d}", "user", str(i), at)
    expected = [f"m{i:02d}" for i in reversed(range(len(times)))]
    for page in (1, 2, 3, 4, 11, 50):
        assert [m.id for m in await all_messages(store, alice, c1, page)] == expected, f"page size {page}"


async def test_the_default_page_is_the_newest_50_and_older_ones_come_on_demand(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 0)
    for i in range(60):
        await store.append_message(alice, c1, f"m{i:02d}", "user", str(i), i * BUCKET_MS // 3)
    newest, cursor = await store.get_messages(alice, c1, "", 0)
    assert [m.id for m in newest] == [f"m{i:02d}" for i in reversed(range(10, 60))]
    older, end = await store.get_messages(alice, c1, cursor, 0)
    assert [m.id for m in older] == [f"m{i:02d}" for i in reversed(range(10))] and end == ""


async def test_conversations_list_latest_activity_first_with_cursor(store: HistoryStore, ns: str) -> None:
    alice = f"alice-{ns}"
    for i in range(5):
        await store.create_conversation(alice, f"c{i}-{ns}", "", 100 + i)
    await store.append_message(alice, f"c0-{ns}", "m", "user", "bump", 1000)
    await store.append_message(alice, f"c0-{ns}", "m2", "user", "again", 1001)
    page1, cursor = await store.list_conversations(alice, "", 2)
    page2, cursor2 = await store.list_conversations(alice, cursor, 10)
    assert [c.id for c in page1] == [f"c0-{ns}", f"c4-{ns}"] and page1[0].updated_at_ms == 1001
    assert [c.id for c in page2] == [f"c3-{ns}", f"c2-{ns}", f"c1-{ns}"] and cursor2 == ""


async def test_an_older_message_arriving_late_does_not_move_a_conversation_back(store: HistoryStore, ns: str) -> None:
    alice, c1, c2 = f"alice-{ns}", f"c1-{ns}", f"c2-{ns}"
    await store.create_conversation(alice, c1, "", 100)
    await store.create_conversation(alice, c2, "", 200)
    await store.append_message(alice, c1, "new", "user", "", 500)
    # Another version of the first message (no parent, so nothing to be dated after).
    await store.append_message(alice, c1, "old", "user", "", 300, parent_id="")
    listed, _ = await store.list_conversations(alice, "", 10)
    assert [(c.id, c.updated_at_ms) for c in listed] == [(c1, 500), (c2, 200)]


async def assert_every_read_refuses(store: HistoryStore, user: str, conversation: str, cursor: str) -> None:
    """Paging messages, listing conversations and syncing from `cursor` are each invalid_cursor."""
    for attempt in (
        store.get_messages(user, conversation, cursor, 10),
        store.list_conversations(user, cursor, 10),
        store.sync(user, cursor, 10),
    ):
        with pytest.raises(InvalidRequest) as raised:
            await attempt
        assert raised.value.code == "invalid_cursor", cursor


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWEtbnVtYmVy", "YQ"])
async def test_a_bad_cursor_is_a_clear_error(store: HistoryStore, ns: str, cursor: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    await assert_every_read_refuses(store, alice, c1, cursor)


# Numbers no position is: past int64 (as both stores keep them), a run of digits, and digits
# that are not ASCII (str.isdigit() says yes to them; int() refuses '²' and reads '٣').
NOT_POSITIONS = [str(2**63), "9" * 120, "\u00b2", "\u0663\u0661", "\uff11"]


@pytest.mark.parametrize("number", NOT_POSITIONS)
async def test_a_cursor_whose_numbers_are_not_positions_is_a_clear_error(
    store: HistoryStore, ns: str, number: str
) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    # Every shape either store's cursors have (each store refuses the others' shapes too):
    # one number (sync), number + id (lists), two numbers + id, a Cassandra snapshot of sync.
    cursors = [
        encode_cursor(number),
        encode_cursor(number, "x"),
        encode_cursor(number, 5, "x"),
        encode_cursor(5, number, "x"),
        encode_cursor("snapshot", number, c1, "", 5, 5),
        encode_cursor("snapshot", "", "", "", number, 5),
        encode_cursor("snapshot", "", "", "", 5, number),
    ]
    for cursor in cursors:
        await assert_every_read_refuses(store, alice, c1, cursor)


# rename and delete


async def test_rename_changes_the_title_but_not_the_order(store: HistoryStore, ns: str) -> None:
    alice, c1, c2 = f"alice-{ns}", f"c1-{ns}", f"c2-{ns}"
    await store.create_conversation(alice, c1, "old", 100)
    await store.create_conversation(alice, c2, "", 200)
    renamed = await store.rename_conversation(alice, c1, "new", 300)
    assert (renamed.id, renamed.title, renamed.updated_at_ms) == (c1, "new", 100)
    assert (await store.get_conversation(alice, c1)).title == "new"
    listed, _ = await store.list_conversations(alice, "", 10)
    assert [(c.id, c.title) for c in listed] == [(c2, ""), (c1, "new")]


async def test_a_deleted_conversation_is_gone_with_its_messages(store: HistoryStore, ns: str) -> None:
    alice, c1, c2 = f"alice-{ns}", f"c1-{ns}", f"c2-{ns}"
    await store.create_conversation(alice, c1, "doomed", 1)
    await store.create_conversation(alice, c2, "kept", 2)
    for i in range(5):
        await store.append_message(alice, c1, f"m{i}", "user", "x", 10 + i * BUCKET_MS)
    await store.append_message(alice, c2, "k", "user", "y", 20)
    await store.delete_conversation(alice, c1, 100)
    usage = chat_pb2.Usage()
    for attempt in (
        store.get_conversation(alice, c1),
        store.get_messages(alice, c1, "", 10),
        store.append_message(alice, c1, "m9", "user", "too late", 200),
        store.complete_message(alice, c1, "r1", "m0", "too late", DONE, "demo", usage, 200),
        store.rename_conversation(alice, c1, "back", 200),
        store.delete_conversation(alice, c1, 200),
    ):
        with pytest.raises(NotFound):
            await attempt
    assert [c.id for c in (await store.list_conversations(alice, "", 10))[0]] == [c2]
    assert [m.id for m in (await store.get_messages(alice, c2, "", 10))[0]] == ["k"]


# sync


async def test_sync_from_the_beginning_lists_every_change_in_order(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "first", 1)
    await store.append_message(alice, c1, "m1", "user", "hello", 2)
    await store.complete_message(alice, c1, "r1", "m1", "hi there", DONE, "demo", chat_pb2.Usage(), 3)
    await store.rename_conversation(alice, c1, "greeting", 4)
    changes, cursor = await sync_all(store, alice, "", 100)
    assert summary(changes) == [(CREATED, c1), (ADDED, "m1"), (COMPLETED, "r1"), (RENAMED, c1)]
    # Each carries the entity as it is now: the rename shows in the creation too.
    assert changes[0].conversation.title == "greeting" and changes[3].conversation.title == "greeting"
    assert changes[1].message.content == "hello" and changes[2].message.content == "hi there"
    assert all(c.conversation_id == c1 for c in changes)
    times = [c.changed_at_ms for c in changes]
    assert times == sorted(times)
    # Nothing new: the same cursor back, nothing more.
    again = await store.sync(alice, cursor, 100)
    assert again.changes == [] and again.next_cursor == cursor and not again.has_more


async def test_an_offline_client_gets_exactly_what_it_missed(store: HistoryStore, ns: str) -> None:
    alice, c1, c2, c3 = f"alice-{ns}", f"c1-{ns}", f"c2-{ns}", f"c3-{ns}"
    await store.create_conversation(alice, c1, "one", 1)
    await store.append_message(alice, c1, "m1", "user", "before", 2)
    _, cursor = await sync_all(store, alice, "", 100)

    # Offline: an answer completes, a rename, a new conversation, a deletion.
    await store.complete_message(alice, c1, "r1", "m1", "answer", DONE, "demo", chat_pb2.Usage(), 3)
    await store.rename_conversation(alice, c1, "renamed", 4)
    await store.create_conversation(alice, c2, "two", 5)
    await store.append_message(alice, c2, "m2", "user", "in two", 6)
    await store.create_conversation(alice, c3, "three", 7)
    await store.delete_conversation(alice, c3, 8)

    missed, cursor2 = await sync_all(store, alice, cursor, 100)
    assert summary(missed) == [(COMPLETED, "r1"), (RENAMED, c1), (CREATED, c2), (ADDED, "m2"), (DELETED, c3)]
    assert missed[1].conversation.title == "renamed" and missed[2].conversation.title == "two"
    assert missed[-1].conversation_id == c3 and not missed[-1].HasField("conversation")
    assert (await store.sync(alice, cursor2, 100)).changes == []


async def test_sync_shows_a_deletion_but_never_the_deleted_content(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "secret title", 1)
    await store.append_message(alice, c1, "m1", "user", "secret content", 2)
    _, cursor = await sync_all(store, alice, "", 100)
    await store.delete_conversation(alice, c1, 3)
    assert summary((await sync_all(store, alice, cursor, 100))[0]) == [(DELETED, c1)]
    from_start, _ = await sync_all(store, alice, "", 100)
    assert summary(from_start) == [(DELETED, c1)]
    assert "secret" not in str(from_start)


async def test_sync_pages_through_a_large_gap(store: HistoryStore, ns: str, clock: TestClock) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", 1)
    for i in range(23):
        await store.append_message(alice, c1, f"m{i:02d}", "user", str(i), 10 + i)
        if i % 4 == 0:
            clock.advance(BUCKET_MS * 3)  # changes land in several buckets, some empty between
    pages = []
    since = ""
    while True:
        result = await store.sync(alice, since, 5)
        pages.append(len(result.changes))
        since = result.next_cursor
        if not result.has_more:
            break
    assert pages == [5, 5, 5, 5, 4]
    changes, _ = await sync_all(store, alice, "", 7)
    assert summary(changes) == [(CREATED, c1)] + [(ADDED, f"m{i:02d}") for i in range(23)]


async def test_sync_is_per_user(store: HistoryStore, ns: str) -> None:
    alice, bob = f"alice-{ns}", f"bob-{ns}"
    await store.create_conversation(alice, f"ca-{ns}", "", 1)
    await store.create_conversation(bob, f"cb-{ns}", "", 2)
    await store.append_message(bob, f"cb-{ns}", "mb", "user", "", 3)
    assert summary((await sync_all(store, alice, "", 100))[0]) == [(CREATED, f"ca-{ns}")]
    assert summary((await sync_all(store, bob, "", 100))[0]) == [(CREATED, f"cb-{ns}"), (ADDED, "mb")]
