"""Paths through a conversation with many versions, paged at every size, on every store.

A seeded mix of questions, answers, edits (a user message's new version) and regenerations (an
answer's), then every page size from 1 up: the pages put together are the path from the leaf
to the first message, following parent ids, and each message carries its siblings (the
messages with its parent and role, oldest first). The stores read a path in rounds of their own
size (sqlite_store: one more than the page first, then doubling), so this crosses rounds
everywhere.
"""

from __future__ import annotations

import random

from parley.v1 import chat_pb2, history_pb2
from parley_history.store import HistoryStore

DONE = history_pb2.MESSAGE_STATUS_COMPLETE
T0 = 1_700_000_000_000


async def versioned_conversation(
    store: HistoryStore, user: str, conversation: str, steps: int, seed: int
) -> dict[str, history_pb2.Message]:
    """Every message stored, by id (as the store returned it when it was stored)."""
    rng = random.Random(seed)
    await store.create_conversation(user, conversation, "", T0)
    stored: dict[str, history_pb2.Message] = {}
    questions: list[str] = []
    at = T0
    for step in range(steps):
        at += 7
        kind = rng.random()
        if questions and kind < 0.15:
            # An edit: a new version of an earlier question, then its answer.
            edited = stored[rng.choice(questions)]
            message, _ = await store.append_message(
                user, conversation, f"e{step}", "user", f"edit {step}", at, parent_id=edited.parent_id
            )
        elif questions and kind < 0.3:
            # A regeneration: another answer to an earlier question (the leaf only if it was).
            message = await store.complete_message(
                user, conversation, f"r{step}", rng.choice(questions), f"again {step}", DONE, "demo",
                chat_pb2.Usage(output_tokens=2), at, finish_reason="stop",
            )  # fmt: skip
            stored[message.id] = message
            continue
        else:
            message, _ = await store.append_message(user, conversation, f"q{step}", "user", f"question {step}", at)
        stored[message.id] = message
        questions.append(message.id)
        at += 7
        answer = await store.complete_message(
            user, conversation, f"a{step}", message.id, f"answer {step} " * (1 + step % 4), DONE, "demo",
            chat_pb2.Usage(output_tokens=3), at, finish_reason="stop",
        )  # fmt: skip
        stored[answer.id] = answer
    return stored


def expected_path(stored: dict[str, history_pb2.Message], leaf: str) -> list[str]:
    out: list[str] = []
    while leaf:
        out.append(leaf)
        leaf = stored[leaf].parent_id
    return out


def expected_siblings(stored: dict[str, history_pb2.Message], message: history_pb2.Message) -> list[str]:
    same = [m for m in stored.values() if m.parent_id == message.parent_id and m.role == message.role]
    return [m.id for m in sorted(same, key=lambda m: (m.created_at_ms, m.id))]


async def test_every_page_size_walks_the_same_path_with_siblings(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    stored = await versioned_conversation(store, alice, c1, 60, seed=20261207)
    current = (await store.get_conversation(alice, c1)).current_message_id
    leaves = ["", *random.Random(7).sample(sorted(stored), 6)]
    for leaf in leaves:
        want = expected_path(stored, leaf or current)
        for size in (1, 2, 3, 5, 8, 13, 40, 200):
            ids: list[str] = []
            cursor = ""
            while True:
                page, cursor = await store.get_messages(alice, c1, cursor, size, leaf_id=leaf)
                assert 0 < len(page) <= size
                for message in page:
                    assert list(message.sibling_ids) == expected_siblings(stored, message), message.id
                    assert message.parent_id == stored[message.id].parent_id
                ids += [m.id for m in page]
                if not cursor:
                    break
            assert ids == want, (leaf, size)
