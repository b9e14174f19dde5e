"""Fitting prompts into a context window (property tests)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parley.v1 import chat_pb2
from parley_common.context.tokens import REPLY_PRIMING, counter_for
from parley_common.context.trimming import ContextTooSmall, fit_context, truncate_message
from parley_common.context.window import plan_context
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig

COUNTER = counter_for("openai", "cl100k_base")
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=400
) | st.sampled_from(["Hello!", "def f(x):\n    return x", "お誕生日おめでとう", "🎉" * 30, "word " * 200])


@st.composite
def conversations(draw: st.DrawFn) -> list[chat_pb2.PromptMessage]:
    system = draw(st.lists(text.filter(bool), max_size=1))
    turns = draw(st.lists(text, min_size=1, max_size=14))
    # A conversation alternates and ends with the user's message, as a prompt does.
    roles = ["user" if (len(turns) - i) % 2 == 1 else "assistant" for i in range(len(turns))]
    return [chat_pb2.PromptMessage(role="system", content=s) for s in system] + [
        chat_pb2.PromptMessage(role=r, content=t) for r, t in zip(roles, turns, strict=True)
    ]


def split(messages: list[chat_pb2.PromptMessage]) -> tuple[list[chat_pb2.PromptMessage], list[chat_pb2.PromptMessage]]:
    n = 0
    while n < len(messages) and messages[n].role == "system":
        n += 1
    return messages[:n], messages[n:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=conversations(), budget=st.integers(min_value=1, max_value=3000))
def test_trimming_never_exceeds_the_window_and_keeps_the_system_prompt_and_newest_turns(
    messages: list[chat_pb2.PromptMessage], budget: int
) -> None:
    system, rest = split(messages)
    try:
        fit = fit_context(messages, COUNTER, budget)
    except ContextTooSmall:
        # Only when the system prompt and a cut-down newest message cannot fit together.
        assert (
            REPLY_PRIMING
            + sum(COUNTER.message(m) for m in system)
            + COUNTER.message(chat_pb2.PromptMessage(role=rest[-1].role))
            + 20
            > budget
        )
        return
    assert fit.input_tokens == COUNTER.prompt(fit.messages) <= budget
    kept_system, kept = split(fit.messages)
    assert kept_system == system, "the system prompt is always kept, whole"
    assert kept, "the newest message is always there, cut if it must be"
    assert fit.dropped_messages == len(rest) - len(kept)
    whole = kept[:-1] if fit.truncated_messages else kept
    # What is kept is the newest part of the conversation, in order, untouched.
    assert rest[len(rest) - len(kept) : len(rest) - len(kept) + len(whole)] == whole
    if fit.truncated_messages:
        assert fit.dropped_messages == len(rest) - 1 and len(kept) == 1
        assert kept[0].content != rest[-1].content and "cut here" in kept[0].content
    elif kept[0].role == "user" and fit.dropped_messages:
        # Maximal: the next older message would not have fit.
        older = rest[len(rest) - len(kept) - 1]
        assert fit.input_tokens + COUNTER.message(older) > budget or older.role == "assistant"
    if COUNTER.prompt(messages) <= budget:
        assert fit.messages == messages and fit.dropped_messages == 0


@settings(max_examples=200, deadline=None)
@given(content=text, room=st.integers(min_value=1, max_value=400))
def test_a_cut_message_fits_its_room_and_keeps_its_start_and_end(content: str, room: int) -> None:
    message = chat_pb2.PromptMessage(role="user", content=content * 5)
    cut = truncate_message(message, COUNTER, room)
    if cut is None:
        assert room < 40
        return
    assert COUNTER.message(cut) <= room
    if COUNTER.message(message) > room and "cut here" in cut.content:
        start, _, end = cut.content.partition("\n\n[… ")
        end = end.partition(" …]\n\n")[2]
        # What is kept is the message's own start and end (a character split across tokens aside).
        assert message.content.startswith(start.rstrip("\ufffd"))
        assert message.content.endswith(end.lstrip("\ufffd"))


def test_the_system_prompt_alone_over_the_budget_is_an_error() -> None:
    messages = [
        chat_pb2.PromptMessage(role="system", content="rules " * 500),
        chat_pb2.PromptMessage(role="user", content="hi"),
    ]
    with pytest.raises(ContextTooSmall):
        fit_context(messages, COUNTER, 100)


def test_an_oversized_image_is_removed_before_the_text() -> None:
    message = chat_pb2.PromptMessage(
        role="user", content="describe this", images=[chat_pb2.ImagePart(width=2048, height=768, detail="high")]
    )
    fit = fit_context([message], COUNTER, 300)
    assert not fit.messages[0].images and "image(s) removed" in fit.messages[0].content
    assert fit.input_tokens <= 300 and fit.truncated_messages == 1


def test_a_leading_assistant_message_is_dropped_with_the_older_ones() -> None:
    messages = [
        chat_pb2.PromptMessage(role="user", content="first " * 300),
        chat_pb2.PromptMessage(role="assistant", content="reply"),
        chat_pb2.PromptMessage(role="user", content="second"),
    ]
    fit = fit_context(messages, COUNTER, 40)
    assert [m.content for m in fit.messages] == ["second"] and fit.dropped_messages == 2


def test_the_plan_keeps_the_output_reserve_free() -> None:
    registry = ModelRegistry(
        default_model="m",
        providers={"p": ProviderConfig(kind="openai", base_url="http://x")},
        models={
            "m": ModelConfig(
                provider="p",
                upstream_model="m",
                context_window=1000,
                max_output_tokens=300,
                input_price_per_mtok=1,
                output_price_per_mtok=2,
            )
        },
    )
    messages = [chat_pb2.PromptMessage(role="user", content=f"message {i} " * 20) for i in range(40)]
    plan = plan_context(registry, "m", messages, requested_max_output=0, default_reserve=2000)
    assert plan.max_output_tokens == 300, "never more than the model's maximum"
    assert plan.fit.input_tokens <= 700 and plan.fit.dropped_messages > 0
    assert plan.reserved_tokens() == plan.fit.input_tokens + 300
    asked = plan_context(registry, "m", messages, requested_max_output=100, default_reserve=2000)
    assert asked.max_output_tokens == 100 and asked.fit.input_tokens <= 900
