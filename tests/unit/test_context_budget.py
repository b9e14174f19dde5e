"""The token budget a conversation's context is fetched up to, and the fetch itself."""

from __future__ import annotations

from parley.v1 import history_pb2
from parley_common.context.prompt import ContextLimits, collect_context, stored_message_tokens
from parley_common.context.window import prompt_token_budget
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig, RoutingConfig


def spec(window: int, max_output: int) -> ModelConfig:
    return ModelConfig(
        provider="p",
        upstream_model="up",
        context_window=window,
        max_output_tokens=max_output,
        input_price_per_mtok=0,
        output_price_per_mtok=0,
    )


REGISTRY = ModelRegistry(
    default_model="big",
    providers={"p": ProviderConfig(kind="demo")},
    models={"big": spec(100_000, 4000), "mini": spec(8000, 1000)},
    routing=RoutingConfig(simple="mini", strong="big"),
)


def test_the_budget_is_the_window_less_the_output_reserve() -> None:
    assert prompt_token_budget(REGISTRY, "mini", requested_max_output=0, default_reserve=2000) == 8000 - 1000
    assert prompt_token_budget(REGISTRY, "big", requested_max_output=0, default_reserve=2000) == 100_000 - 2000
    assert prompt_token_budget(REGISTRY, "big", requested_max_output=300, default_reserve=2000) == 100_000 - 300
    # No model named: routing picks after seeing the prompt, so the largest of its choices.
    assert prompt_token_budget(REGISTRY, "", requested_max_output=0, default_reserve=2000) == 98_000
    assert prompt_token_budget(REGISTRY, "nope", requested_max_output=0, default_reserve=2000) == 1


async def test_a_draft_counts_toward_the_budget_and_the_cap_before_stored_messages() -> None:
    stored = [history_pb2.Message(id=f"m{i}", role="user", content=f"stored message {i}") for i in range(300)]
    pages: list[tuple[str, int]] = []

    async def fetch(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
        pages.append((before, limit))
        start = int(before or 0)
        page = stored[start : start + limit]
        return page, str(start + limit) if start + limit < len(stored) else ""

    draft = history_pb2.Message(role="user", content="draft")
    every = await collect_context(fetch, ContextLimits(token_budget=1_000_000, max_messages=1000), newest=[draft])
    assert every.newest_first == [draft, *stored] and every.complete
    assert pages == [("", 50), ("50", 200), ("250", 200)], "a small first page, then large ones"
    capped = await collect_context(fetch, ContextLimits(token_budget=1_000_000, max_messages=100), newest=[draft])
    assert len(capped.newest_first) == 100 and not capped.complete
    budget = stored_message_tokens(draft) + 10 * stored_message_tokens(stored[0])
    ten = await collect_context(fetch, ContextLimits(token_budget=budget, max_messages=1000), newest=[draft])
    assert ten.newest_first == [draft, *stored[:10]] and ten.tokens == budget and not ten.complete


async def test_a_draft_that_fills_the_context_alone_still_learns_whether_older_messages_exist() -> None:
    stored = [history_pb2.Message(id="m0", role="user", content="stored")]

    async def some(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
        return stored[:limit], ""

    async def none(before: str, limit: int) -> tuple[list[history_pb2.Message], str]:
        return [], ""

    draft = history_pb2.Message(role="user", content="draft " * 50)
    for limits in (ContextLimits(token_budget=0, max_messages=1), ContextLimits(token_budget=10, max_messages=1000)):
        older = await collect_context(some, limits, newest=[draft])
        assert older.newest_first == [draft] and not older.complete, "older messages: at least one is dropped"
        alone = await collect_context(none, limits, newest=[draft])
        assert alone.newest_first == [draft] and alone.complete
