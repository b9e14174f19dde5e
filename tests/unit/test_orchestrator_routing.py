"""Routing a request that names no model, and the registry's routing and budget fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from parley.v1 import chat_pb2
from parley_common.context.assembly import ContextSource, PromptSettings, assemble_context
from parley_common.context.model_choice import is_simple_query, looks_like_code
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig, RoutingConfig
from parley_orchestrator.routing import ModelRouter

ROOT = Path(__file__).resolve().parents[2]


def model(provider: str = "p", **extra: object) -> ModelConfig:
    return ModelConfig(
        provider=provider,
        upstream_model="up",
        context_window=8000,
        max_output_tokens=1000,
        input_price_per_mtok=1,
        output_price_per_mtok=2,
        **extra,  # type: ignore[arg-type]
    )


def registry(routing: RoutingConfig | None) -> ModelRegistry:
    return ModelRegistry(
        default_model="big",
        providers={"p": ProviderConfig(kind="openai", base_url="http://x")},
        models={"big": model(fallbacks=("small",)), "small": model(), "other": model()},
        routing=routing,
    )


def prompt(*turns: str, images: bool = False) -> list[chat_pb2.PromptMessage]:
    out = [chat_pb2.PromptMessage(role="system", content="be nice")]
    for i, text in enumerate(turns):
        role = "user" if (len(turns) - i) % 2 == 1 else "assistant"
        out.append(chat_pb2.PromptMessage(role=role, content=text))
    if images:
        out[-1].images.append(chat_pb2.ImagePart(media_id="m1", width=10, height=10))
    return out


async def chosen(registry: ModelRegistry, requested: str, messages: list[chat_pb2.PromptMessage]) -> str:
    """The model the context is assembled for (the orchestrator then routes to it)."""
    plan = await assemble_context(registry, PromptSettings(), ContextSource.messages(messages), model=requested)
    name: str = plan.model
    return name


async def test_without_a_routing_section_everything_goes_to_the_default_model() -> None:
    routes = registry(None)
    assert await chosen(routes, "", prompt("hi")) == "big"
    assert await chosen(routes, "", prompt("def f():\n    pass")) == "big"


async def test_simple_queries_go_to_the_cheap_model_the_rest_to_the_strong_one() -> None:
    routes = registry(RoutingConfig(simple="small", simple_max_chars=100, simple_max_history=2))
    assert await chosen(routes, "", prompt("What is the capital of France?")) == "small"
    assert await chosen(routes, "", prompt("x" * 101)) == "big", "too long"
    assert await chosen(routes, "", prompt("What is in this picture?", images=True)) == "big", "an image"
    assert await chosen(routes, "", prompt("Why does `for (i = 0; i < n; i++) {` loop forever?")) == "big", "code"
    assert await chosen(routes, "", prompt("a", "b", "c", "d")) == "big", "a long conversation"
    assert await chosen(routes, "", prompt("a", "b", "c")) == "small"
    assert await chosen(routes, "other", prompt("hi")) == "other", "a pinned model is never changed"
    big = await chosen(routes, "", prompt("x" * 500))
    assert [t.model for t in ModelRouter(routes).route(big).fallbacks] == ["small"]


async def test_routing_can_name_its_strong_model() -> None:
    routes = registry(RoutingConfig(simple="small", strong="other"))
    assert await chosen(routes, "", prompt("Please write a long essay. " * 40)) == "other"


@pytest.mark.parametrize(
    "text",
    [
        "```python\nprint(1)\n```",
        "def main():\n    return 0",
        "import numpy as np",
        "SELECT name FROM users WHERE id = 1",
        "#include <stdio.h>",
        "int x = 1;",
        "    indented block",
    ],
)
def test_code_is_recognised(text: str) -> None:
    assert looks_like_code(text)


@pytest.mark.parametrize("text", ["What is the weather like?", "Thanks! And in French?", "Import duties in Spain?"])
def test_plain_questions_are_not_code(text: str) -> None:
    assert not looks_like_code(text)


def test_a_prompt_that_ends_with_an_answer_is_not_simple() -> None:
    messages = [
        chat_pb2.PromptMessage(role="user", content="hi"),
        chat_pb2.PromptMessage(role="assistant", content="yo"),
    ]
    assert not is_simple_query(messages, max_chars=100, max_history=10)


def test_routing_and_budgets_are_validated() -> None:
    with pytest.raises(ValueError, match=r"routing\.simple"):
        registry(RoutingConfig(simple="nope"))
    with pytest.raises(ValueError):
        model(tokens_per_minute=0)
    limited = model(requests_per_minute=3500, tokens_per_minute=150_000)
    assert (limited.requests_per_minute, limited.tokens_per_minute) == (3500, 150_000)


@pytest.mark.parametrize(
    "path", ["config/models.yaml", "config/models.example.yaml", "deploy/k8s/base/config/models.yaml"]
)
def test_the_shipped_registries_load(path: str) -> None:
    loaded = ModelRegistry.load(ROOT / path)
    assert loaded.default_model in loaded.models
