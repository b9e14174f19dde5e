"""The count POST /v1/tokens/count shows is the count of what the orchestrator sends.

Both go through parley_common.context.assembly, with the prompt settings both services read
from the same variables. Here the gateway's endpoint (in an ASGI app) and the orchestrator's
assembly of a new message (AppendMessage with the turn's context limits, then
assemble_context, as its consumer does) read one conversation from a real history server
(gRPC, SQLite), and must agree on the model, every token and what is left out.
"""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from parley.v1 import chat_pb2, history_pb2, history_pb2_grpc
from parley_common.clients.history import HistoryClient
from parley_common.context.assembly import ContextSource, PromptSettings, assemble_context, context_limits
from parley_common.context.window import ContextPlan
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig, RoutingConfig
from parley_common.service.grpc_server import GrpcServer
from parley_common.settings import CommonSettings
from parley_gateway import deps
from parley_gateway.routes import tokens
from parley_gateway.settings import GatewaySettings
from parley_history.grpc_api import HistoryServicer
from parley_history.sqlite_store import SqliteHistoryStore
from parley_orchestrator.settings import OrchestratorSettings

USER = "drift-user"


def model(window: int, max_output: int) -> ModelConfig:
    return ModelConfig(
        provider="p",
        upstream_model=f"up-{window}",
        context_window=window,
        max_output_tokens=max_output,
        input_price_per_mtok=1.0,
        output_price_per_mtok=4.0,
    )


REGISTRY = ModelRegistry(
    default_model="wide",
    providers={"p": ProviderConfig(kind="openai")},
    models={"wide": model(100_000, 4000), "small": model(400, 100)},
    routing=RoutingConfig(simple="small", strong="wide"),
)


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[HistoryClient]:
    store = SqliteHistoryStore(tmp_path / "history.sqlite3", synchronous="NORMAL")
    servicer = HistoryServicer(store)
    server = GrpcServer("127.0.0.1", 0, lambda s: history_pb2_grpc.add_HistoryServiceServicer_to_server(servicer, s))
    await server.start()
    await server.ready()
    client = HistoryClient(f"127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        await client.close()
        await server.stop(0)
        await store.close()


def both_settings(monkeypatch: pytest.MonkeyPatch, history_messages: int) -> tuple[GatewaySettings, PromptSettings]:
    """The gateway's and the orchestrator's settings, from one environment."""
    monkeypatch.setenv("PARLEY_SYSTEM_PROMPT", "You answer briefly.")
    monkeypatch.setenv("PARLEY_PROMPT_HISTORY_MESSAGES", str(history_messages))
    monkeypatch.setenv("PARLEY_RESERVED_OUTPUT_TOKENS", "150")
    monkeypatch.setenv("PARLEY_DEV_API_KEY", "pk_test_drift_0123456789")
    return GatewaySettings(), OrchestratorSettings()


async def counted(history: HistoryClient, settings: GatewaySettings, draft: dict[str, Any]) -> dict[str, Any]:
    """The endpoint's answer: its router in an app holding what the gateway's handlers use of
    it (deps.Gateway), for a user already authenticated and counted."""
    app = FastAPI()
    app.include_router(tokens.router)
    app.state.gateway = types.SimpleNamespace(settings=settings, registry=REGISTRY, history=history, media=None)
    app.dependency_overrides[deps.current_user] = lambda: USER
    app.dependency_overrides[deps.count_request] = lambda: None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        reply = await client.post("/v1/tokens/count", json=draft)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def sent(
    history: HistoryClient, settings: PromptSettings, conversation: str, draft: dict[str, Any]
) -> ContextPlan:
    """What the orchestrator's consumer sends for that message: history appends it and reads the
    context within the turn's limits, then the one entry point assembles it."""
    limits = context_limits(
        REGISTRY, settings, model=draft.get("model", ""), max_output_tokens=draft.get("max_output_tokens", 0)
    )
    appended = await history.append_message(
        USER,
        conversation,
        "the-draft",
        "user",
        draft["content"],
        int(time.time() * 1000),
        context_limit=limits.max_messages,
        context_token_budget=limits.token_budget,
    )
    return await assemble_context(
        REGISTRY,
        settings,
        ContextSource.conversation(appended.context, complete=appended.context_complete),
        model=draft.get("model", ""),
        max_output_tokens=draft.get("max_output_tokens", 0),
    )


async def conversation_of(history: HistoryClient, turns: int) -> str:
    conversation: str = (await history.create_conversation(USER, "")).id
    start = int(time.time() * 1000) - 60_000
    for i in range(turns):
        await history.append_message(USER, conversation, f"q{i}", "user", f"Question {i} about windows?", start + 2 * i)
        answer = f"Answer {i}: " + "windows hold tokens " * (i % 4)
        await history.append_message(USER, conversation, f"a{i}", "assistant", answer, start + 2 * i + 1)
    return conversation


SOME = -1  # more than one dropped, as many as the window makes


@pytest.mark.parametrize(
    ("history_messages", "turns", "draft", "dropped"),
    [
        # A small window: the newest turns are sent, the rest dropped.
        (1000, 30, {"content": "And the last one?", "model": "small"}, SOME),
        # No model named: routing picks from the prompt (code: the strong model), the whole conversation.
        (1000, 30, {"content": "Why does this fail?\n```python\nprint(1/0)\n```"}, 0),
        # No model named, a simple query: the small model, its newest turns.
        (1000, 0, {"content": "What is a window?"}, 0),
        # The client's own answer cap leaves the prompt more room.
        (1000, 30, {"content": "Shorter please.", "model": "small", "max_output_tokens": 20}, SOME),
        # At most this many messages are read, whatever the window: older ones count as one.
        (7, 30, {"content": "Only the newest?", "model": "wide"}, 1),
        (1, 3, {"content": "Just this one.", "model": "wide"}, 1),
        # A new conversation: the system prompt and the message, nothing dropped.
        (1000, 0, {"content": "Hello there.", "model": "small"}, 0),
    ],
)
async def test_the_count_shown_before_sending_is_the_count_of_what_is_sent(
    history: HistoryClient,
    monkeypatch: pytest.MonkeyPatch,
    history_messages: int,
    turns: int,
    draft: dict[str, Any],
    dropped: int,
) -> None:
    gateway_settings, orchestrator_settings = both_settings(monkeypatch, history_messages)
    conversation = await conversation_of(history, turns)
    shown = await counted(history, gateway_settings, {**draft, "conversation_id": conversation})
    plan = await sent(history, orchestrator_settings, conversation, draft)

    assert plan.fit.messages[0].content == "You answer briefly." and plan.fit.messages[-1].content == draft["content"]
    assert shown["model"] == plan.model
    assert shown["input_tokens"] == plan.counter.prompt(plan.fit.messages), "the tokens of the prompt sent"
    assert shown["max_output_tokens"] == plan.max_output_tokens
    assert (shown["dropped_messages"], shown["truncated"]) == (plan.dropped_messages, plan.truncated_messages > 0)
    assert shown["cost_estimate_micros"] == plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens)
    if dropped == SOME:
        assert shown["dropped_messages"] > 1 and len(plan.fit.messages) < 1 + 2 * turns
    else:
        assert shown["dropped_messages"] == dropped


def test_both_services_read_the_prompt_settings_from_the_same_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, orchestrator = both_settings(monkeypatch, 42)
    fields = set(PromptSettings.model_fields) - set(CommonSettings.model_fields)
    assert fields == {"system_prompt", "prompt_history_messages", "reserved_output_tokens"}
    for name in fields:
        assert getattr(gateway, name) == getattr(orchestrator, name)
    assert (orchestrator.system_prompt, orchestrator.prompt_history_messages) == ("You answer briefly.", 42)
    assert orchestrator.reserved_output_tokens == 150


async def test_a_failed_answer_is_left_out_of_what_is_counted_and_sent(
    history: HistoryClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_settings, orchestrator_settings = both_settings(monkeypatch, 1000)
    conversation = await conversation_of(history, 2)
    start = int(time.time() * 1000) - 30_000
    await history.append_message(USER, conversation, "q-broken", "user", "One more?", start)
    failed = await history.append_message(USER, conversation, "a-broken", "assistant", "", start + 1)
    assert failed.message.content == ""
    draft = {"content": "Again?", "model": "wide"}
    shown = await counted(history, gateway_settings, {**draft, "conversation_id": conversation})
    plan = await sent(history, orchestrator_settings, conversation, draft)
    assert "" not in [m.content for m in plan.fit.messages], "the empty answer is not sent"
    assert [m.role for m in plan.fit.messages].count("assistant") == 2
    assert shown["input_tokens"] == plan.fit.input_tokens and shown["dropped_messages"] == plan.dropped_messages == 0


async def test_a_fallback_job_reports_what_its_first_fit_and_its_refit_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, settings = both_settings(monkeypatch, 1000)
    older = [
        history_pb2.Message(role="user" if i % 2 == 0 else "assistant", content=f"turn {i}: " + "tokens " * 30)
        for i in range(12)
    ]
    first = await assemble_context(REGISTRY, settings, ContextSource.conversation(older, complete=False), model="wide")
    assert first.dropped_messages == 1, "older messages unread count as one"
    job = chat_pb2.ProviderJob(
        model="small",
        messages=first.fit.messages,
        max_output_tokens=first.max_output_tokens,
        dropped_messages=first.dropped_messages,
        truncated_messages=first.truncated_messages,
    )
    refit = await assemble_context(
        REGISTRY, settings, ContextSource.job(job), model=job.model, max_output_tokens=job.max_output_tokens
    )
    assert refit.fit.dropped_messages > 0 and refit.max_output_tokens == REGISTRY.models["small"].max_output_tokens
    assert refit.dropped_messages == first.dropped_messages + refit.fit.dropped_messages
