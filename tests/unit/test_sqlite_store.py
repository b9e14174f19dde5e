"""The embedded history store: isolation, idempotency, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import InvalidRequest, NotFound
from parley_history.sqlite_store import SqliteHistoryStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    s = SqliteHistoryStore(tmp_path / "h.sqlite3", synchronous="NORMAL")
    yield s
    await s.close()


async def test_another_users_conversation_is_not_found(store: SqliteHistoryStore) -> None:
    await store.create_conversation("alice", "c1", "mine", 1)
    with pytest.raises(NotFound):
        await store.get_conversation("bob", "c1")
    with pytest.raises(NotFound):
        await store.append_message("bob", "c1", "m1", "user", "hi", 2)
    with pytest.raises(NotFound):
        await store.get_messages("bob", "c1", "", 10)
    assert (await store.list_conversations("bob", "", 10))[0] == []


async def test_append_is_idempotent_on_the_message_id(store: SqliteHistoryStore) -> None:
    await store.create_conversation("alice", "c1", "", 1)
    first, created = await store.append_message("alice", "c1", "m1", "user", "hi", 2)
    again, created_again = await store.append_message("alice", "c1", "m1", "user", "hi", 3)
    assert created and not created_again
    assert again == first
    messages, _ = await store.get_messages("alice", "c1", "", 10)
    assert [m.id for m in messages] == ["m1"]


async def test_complete_is_idempotent_and_keeps_the_first(store: SqliteHistoryStore) -> None:
    await store.create_conversation("alice", "c1", "", 1)
    usage = chat_pb2.Usage(input_tokens=3, output_tokens=5)
    done = history_pb2.MESSAGE_STATUS_COMPLETE
    first = await store.complete_message("alice", "c1", "r1", "m1", "answer", done, "demo", usage, 5)
    again = await store.complete_message("alice", "c1", "r1", "m1", "other", done, "demo", usage, 6)
    assert again == first
    assert first.usage.output_tokens == 5 and first.role == "assistant"


async def test_messages_page_backwards_newest_first(store: SqliteHistoryStore) -> None:
    await store.create_conversation("alice", "c1", "", 1)
    for i in range(7):
        await store.append_message("alice", "c1", f"m{i}", "user", str(i), 10 + i)
    seen: list[str] = []
    cursor = ""
    while True:
        page, cursor = await store.get_messages("alice", "c1", cursor, 3)
        seen += [m.id for m in page]
        if not cursor:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]


async def test_conversations_list_latest_activity_first_with_cursor(store: SqliteHistoryStore) -> None:
    for i in range(5):
        await store.create_conversation("alice", f"c{i}", "", 100 + i)
    await store.append_message("alice", "c0", "m", "user", "bump", 1000)
    page1, cursor = await store.list_conversations("alice", "", 2)
    page2, cursor2 = await store.list_conversations("alice", cursor, 10)
    assert [c.id for c in page1] == ["c0", "c4"]
    assert [c.id for c in page2] == ["c3", "c2", "c1"] and cursor2 == ""


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWEtbnVtYmVy", "YQ"])
async def test_a_bad_cursor_is_a_clear_error(store: SqliteHistoryStore, cursor: str) -> None:
    await store.create_conversation("alice", "c1", "", 1)
    with pytest.raises(InvalidRequest):
        await store.get_messages("alice", "c1", cursor, 10)
    with pytest.raises(InvalidRequest):
        await store.list_conversations("alice", cursor, 10)
