"""The orchestrator's context from AppendMessage: the newest messages up to a token budget.

Run through the gRPC servicer on every store backend (the servicer pages the store).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from parley.v1 import chat_pb2, history_pb2
from parley_common.context.prompt import MAX_CONTEXT_MESSAGES, stored_message_tokens
from parley_history.grpc_api import HistoryServicer
from parley_history.store import HistoryStore
from tests.support.history_stores import BUCKET_MS

START_MS = 1_700_000_000_000


class Aborted(Exception):
    """The status a servicer ended its call with."""

    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{status.name}: {details}")
        self.status, self.details = status, details


class CallContext:
    """What the servicer reads of a gRPC call: its (empty) metadata; and how it ends one."""

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    async def abort(self, status: grpc.StatusCode, details: str) -> None:
        raise Aborted(status, details)


async def conversation_of(store: HistoryStore, user: str, conversation: str, count: int) -> None:
    await store.create_conversation(user, conversation, "", START_MS)
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        text = f"message {i:03d}: " + "the quick brown fox jumps over the lazy dog " * (1 + i % 3)
        await store.append_message(user, conversation, f"m{i:03d}", role, text, START_MS + i * BUCKET_MS // 3)


async def append(
    store: HistoryStore, user: str, conversation: str, *, limit: int = 0, budget: int = 0, after_stored: str = ""
) -> history_pb2.AppendMessageResponse:
    request = history_pb2.AppendMessageRequest(
        after_stored_id=after_stored,
        user_id=user,
        conversation_id=conversation,
        message_id="m119",
        role="user",
        content="message 119: the newest question",
        created_at_ms=START_MS + 119 * BUCKET_MS // 3,
        context_limit=limit,
        context_token_budget=budget,
    )
    reply: history_pb2.AppendMessageResponse = await HistoryServicer(store).AppendMessage(request, CallContext())
    return reply


async def test_a_large_budget_fills_past_40_messages_newest_first(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await conversation_of(store, alice, c1, 119)
    reply = await append(store, alice, c1, limit=1000, budget=100_000)
    assert [m.id for m in reply.context] == [f"m{i:03d}" for i in reversed(range(120))]
    assert reply.context_complete


async def test_a_small_budget_stops_at_the_message_that_reaches_it(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await conversation_of(store, alice, c1, 119)
    reply = await append(store, alice, c1, limit=1000, budget=300)
    ids = [m.id for m in reply.context]
    assert 1 < len(ids) < 40 and ids == [f"m{i:03d}" for i in reversed(range(120 - len(ids), 120))]
    counts = [stored_message_tokens(m) for m in reply.context]
    # Every message that could fit is there, and the one that does not (so the caller knows).
    assert sum(counts[:-1]) < 300 <= sum(counts)
    assert not reply.context_complete


async def test_the_message_cap_holds_whatever_the_budget(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await conversation_of(store, alice, c1, 119)
    capped = await append(store, alice, c1, limit=73, budget=100_000)
    assert [m.id for m in capped.context] == [f"m{i:03d}" for i in reversed(range(120 - 73, 120))]
    assert not capped.context_complete
    # Without a budget, context_limit alone still means "the latest this many" (past one page).
    legacy = await append(store, alice, c1, limit=40)
    assert [m.id for m in legacy.context] == [f"m{i:03d}" for i in reversed(range(80, 120))]
    assert len((await append(store, alice, c1, limit=MAX_CONTEXT_MESSAGES + 5)).context) == 120


async def test_answers_a_prompt_leaves_out_cost_nothing(store: HistoryStore, ns: str) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await store.create_conversation(alice, c1, "", START_MS)
    await store.append_message(alice, c1, "m000", "user", "first " * 400, START_MS)
    for i in range(1, 119):
        await store.complete_message(
            alice,
            c1,
            f"m{i:03d}",
            # Each one after the one before, so that all are on the current path.
            f"m{i - 1:03d}",
            "broken " * 50,
            history_pb2.MESSAGE_STATUS_FAILED,
            "demo",
            chat_pb2.Usage(),
            START_MS + i,
        )
    reply = await append(store, alice, c1, limit=1000, budget=200)
    # 118 failed answers add nothing: the context reaches the first question, which ends it.
    assert len(reply.context) == 120 and reply.context[-1].id == "m000"


@pytest.mark.parametrize("with_context", [True, False], ids=["with-context", "plain"])
async def test_an_append_after_an_answer_not_stored_yet_writes_nothing_and_says_why(
    store: HistoryStore, ns: str, with_context: bool
) -> None:
    alice, c1 = f"alice-{ns}", f"c1-{ns}"
    await conversation_of(store, alice, c1, 2)  # m000 the question, m001 its answer
    limits: dict[str, int] = {"limit": 50, "budget": 100_000} if with_context else {}
    with pytest.raises(Aborted) as refused:
        await append(store, alice, c1, after_stored="r-still-streaming", **limits)
    assert refused.value.status == grpc.StatusCode.NOT_FOUND
    assert refused.value.details.startswith("answer_not_stored: ")
    page, _ = await store.get_messages(alice, c1, "", 10)
    assert [m.id for m in page] == ["m001", "m000"]
    # Once the answer it follows is stored, the same append goes through, after it.
    reply = await append(store, alice, c1, after_stored="m001", **limits)
    assert reply.created and reply.message.parent_id == "m001"
    if with_context:
        assert [m.id for m in reply.context] == ["m119", "m001", "m000"]
    # Another user learns nothing of the conversation, stored answer or not.
    with pytest.raises(Aborted) as foreign:
        await append(store, f"bob-{ns}", c1, after_stored="m001", **limits)
    assert foreign.value.status == grpc.StatusCode.NOT_FOUND
    assert foreign.value.details.startswith("conversation_not_found: ")
