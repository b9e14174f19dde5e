"""Versions (regenerate, edit and resend), the current path, continuations and attachments,
on every store."""

from __future__ import annotations

import pytest

from parley.v1 import chat_pb2, history_pb2
from parley_common.errors import NotFound
from parley_history.store import HistoryStore
from tests.support.history_stores import BUCKET_MS

DONE = history_pb2.MESSAGE_STATUS_COMPLETE
INTERRUPTED = history_pb2.MESSAGE_STATUS_INTERRUPTED
UPDATED = history_pb2.CHANGE_KIND_CONVERSATION_UPDATED
T0 = 1_700_000_000_000


async def path(store: HistoryStore, user: str, conversation: str, page: int = 50, leaf: str = "") -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        batch, cursor = await store.get_messages(user, conversation, cursor, page, leaf_id=leaf)
        ids += [m.id for m in batch]
        if not cursor:
            return ids


async def answer(
    store: HistoryStore,
    user: str,
    conversation: str,
    answer_id: str,
    question_id: str,
    text: str,
    at: int,
    status: history_pb2.MessageStatus.ValueType = DONE,
    finish_reason: str = "stop",
) -> history_pb2.Message:
    return await store.complete_message(
        user, conversation, answer_id, question_id, text, status, "demo", chat_pb2.Usage(output_tokens=3), at,
        finish_reason=finish_reason,
    )  # fmt: skip


async def two_turns(store: HistoryStore, user: str, conversation: str) -> None:
    await store.create_conversation(user, conversation, "", T0)
    await store.append_message(user, conversation, "u1", "user", "first question", T0 + 10)
    await answer(store, user, conversation, "a1", "u1", "first answer", T0 + 20)
    await store.append_message(user, conversation, "u2", "user", "second question", T0 + 30)
    await answer(store, user, conversation, "a2", "u2", "second answer", T0 + 40)


async def test_messages_carry_their_parent_and_the_path_is_explicit(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await two_turns(store, alice, c1)
    page, _ = await store.get_messages(alice, c1, "", 10)
    assert [(m.id, m.parent_id, list(m.sibling_ids)) for m in page] == [
        ("a2", "u2", ["a2"]),
        ("u2", "a1", ["u2"]),
        ("a1", "u1", ["a1"]),
        ("u1", "", ["u1"]),
    ]
    assert page[0].finish_reason == "stop"
    assert (await store.get_conversation(alice, c1)).current_message_id == "a2"


async def test_regenerated_answers_are_versions_and_the_newest_becomes_current(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await two_turns(store, alice, c1)
    # Regenerate a2 three times: the path is taken back to its question, then each answers it.
    for i, at in enumerate((T0 + 2 * BUCKET_MS, T0 + 3 * BUCKET_MS, T0 + 5 * BUCKET_MS)):
        await store.set_current(alice, c1, "u2", True, at)
        assert await path(store, alice, c1) == ["u2", "a1", "u1"]
        stored = await answer(store, alice, c1, f"a2v{i}", "u2", f"version {i}", at + 1)
        assert stored.parent_id == "u2"
    assert await path(store, alice, c1, page=1) == ["a2v2", "u2", "a1", "u1"]
    current = await store.get_message(alice, c1, "a2v2")
    assert list(current.sibling_ids) == ["a2", "a2v0", "a2v1", "a2v2"]
    # Switching to an older version; the next message follows it.
    switched = await store.set_current(alice, c1, "a2v0", False, T0 + 6 * BUCKET_MS)
    assert switched.current_message_id == "a2v0"
    await store.append_message(alice, c1, "u3", "user", "third", T0 + 6 * BUCKET_MS + 1)
    assert await path(store, alice, c1, page=2) == ["u3", "a2v0", "u2", "a1", "u1"]
    # Back to the newest version: its own path, which has no third question.
    await store.set_current(alice, c1, "a2v2", False, T0 + 7 * BUCKET_MS)
    assert await path(store, alice, c1) == ["a2v2", "u2", "a1", "u1"]
    # The path that ends at a given message, whatever is current.
    assert await path(store, alice, c1, leaf="u3") == ["u3", "a2v0", "u2", "a1", "u1"]


async def test_an_edit_is_a_new_version_of_the_question_and_switching_descends(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await two_turns(store, alice, c1)
    edited, created = await store.append_message(
        alice, c1, "u2e", "user", "second question, better", T0 + 50, parent_id="a1", media_ids=["med_1"]
    )
    assert created and edited.parent_id == "a1" and list(edited.sibling_ids) == ["u2", "u2e"]
    assert list(edited.media_ids) == ["med_1"]
    await answer(store, alice, c1, "a2e", "u2e", "better answer", T0 + 60)
    assert await path(store, alice, c1) == ["a2e", "u2e", "a1", "u1"]
    # Switching to the first version of the question: the newest chain below it.
    conversation = await store.set_current(alice, c1, "u2", False, T0 + 70)
    assert conversation.current_message_id == "a2"
    assert await path(store, alice, c1) == ["a2", "u2", "a1", "u1"]
    # Editing the first message: a version with no parent.
    first, _ = await store.append_message(alice, c1, "u1e", "user", "another start", T0 + 80, parent_id="")
    assert list(first.sibling_ids) == ["u1", "u1e"]
    assert await path(store, alice, c1) == ["u1e"]
    with pytest.raises(NotFound):
        await store.append_message(alice, c1, "u9", "user", "?", T0 + 90, parent_id="nope")


async def test_another_users_messages_are_not_found(store: HistoryStore, ns: str) -> None:
    alice, bob, c1 = f"alice-{ns}", f"bob-{ns}", f"c1-{ns}"
    await two_turns(store, alice, c1)
    for call in (
        store.get_message(bob, c1, "a1"),
        store.set_current(bob, c1, "a1", False, T0 + 100),
        store.begin_continuation(bob, c1, "a1", "r-x"),
        store.conversation_media(bob, c1),
    ):
        with pytest.raises(NotFound) as raised:
            await call
        assert raised.value.code == "conversation_not_found"
    with pytest.raises(NotFound) as missing:
        await store.get_message(alice, c1, "nope")
    assert missing.value.code == "message_not_found"


async def test_a_continuation_is_appended_exactly_once(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", T0)
    await store.append_message(alice, c1, "u1", "user", "tell me", T0 + 10)
    await answer(store, alice, c1, "a1", "u1", "Once upon a ", T0 + 20, INTERRUPTED, "cancelled")
    message, base, applied = await store.begin_continuation(alice, c1, "a1", "r-cont")
    with pytest.raises(NotFound):
        await store.get_message(alice, c1, "r-cont")  # not applied yet
    with pytest.raises(NotFound) as pending:  # nor is it stored for the next message to follow
        await store.append_and_read(alice, c1, "u2", "user", "and then?", T0 + 25, 10, after_stored="r-cont")
    assert pending.value.code == "answer_not_stored"
    assert (message.content, base, applied) == ("Once upon a ", 12, False)
    again = await store.begin_continuation(alice, c1, "a1", "r-cont")
    assert again[1:] == (12, False)
    for _ in range(3):  # the completion is redelivered
        stored = await answer(store, alice, c1, "r-cont", "u1", "time.", T0 + 30, DONE, "stop")
        assert stored.id == "a1" and stored.content == "Once upon a time."
    page, _ = await store.get_messages(alice, c1, "", 10)
    assert [(m.id, m.content, m.status, m.finish_reason) for m in page] == [
        ("a1", "Once upon a time.", DONE, "stop"),
        ("u1", "tell me", DONE, ""),
    ]
    assert page[0].usage.output_tokens == 6
    assert (await store.begin_continuation(alice, c1, "a1", "r-cont"))[2] is True
    # The continuation's response id names the message it went into (the next turn waits for it).
    assert (await store.get_message(alice, c1, "r-cont")).id == "a1"
    # A second continuation goes on from the whole text.
    _, base2, _ = await store.begin_continuation(alice, c1, "a1", "r-cont2")
    assert base2 == len("Once upon a time.")
    stored = await answer(store, alice, c1, "r-cont2", "u1", " The end.", T0 + 40)
    assert stored.content == "Once upon a time. The end."
    # The next message follows it: the continuation's response id names a1, now stored.
    _, created, page, _ = await store.append_and_read(
        alice, c1, "u2", "user", "and then?", T0 + 50, 10, after_stored="r-cont2"
    )
    assert created and [m.id for m in page] == ["u2", "a1", "u1"]


async def test_media_of_every_version_are_listed(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", T0)
    await store.append_message(alice, c1, "u1", "user", "look", T0 + 10, media_ids=["med_a", "med_b"])
    await store.append_message(alice, c1, "u1e", "user", "look again", T0 + 20, parent_id="", media_ids=["med_c"])
    assert sorted(await store.conversation_media(alice, c1)) == ["med_a", "med_b", "med_c"]
    page, _ = await store.get_messages(alice, c1, "", 10)
    assert [list(m.media_ids) for m in page] == [["med_c"]]


async def test_sync_carries_every_version_and_the_current_leaf(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await two_turns(store, alice, c1)
    await store.set_current(alice, c1, "u2", True, T0 + 50)
    await answer(store, alice, c1, "a2b", "u2", "again", T0 + 60)
    await store.set_current(alice, c1, "a2", False, T0 + 70)
    changes: list[history_pb2.Change] = []
    since = ""
    while True:
        page = await store.sync(alice, since, 100)
        changes += page.changes
        since = page.next_cursor
        if not page.has_more:
            break
    messages = {c.message.id: c.message for c in changes if c.HasField("message")}
    assert set(messages) == {"u1", "a1", "u2", "a2", "a2b"}
    assert list(messages["a2b"].sibling_ids) == ["a2", "a2b"]
    assert all(c.current_message_id == "a2" for c in changes if c.conversation_id == c1)
    assert UPDATED in {c.kind for c in changes}


async def test_an_answer_stored_after_the_next_question_is_shown_between_them(store: HistoryStore, ns: str) -> None:
    """History was away while an answer streamed: the next question (sent after the user saw the
    answer) was stored first, so its parent is the previous question; the answer, stored when
    history came back, is still on the path, where the user saw it."""
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", T0)
    await store.append_message(alice, c1, "u1", "user", "first question", T0 + 10)
    await store.append_message(alice, c1, "u2", "user", "second question", T0 + 30)
    await answer(store, alice, c1, "a1", "u1", "first answer", T0 + 40)
    await answer(store, alice, c1, "a2", "u2", "second answer", T0 + 50)
    assert await path(store, alice, c1) == ["a2", "u2", "a1", "u1"]
