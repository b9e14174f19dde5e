from __future__ import annotations

from parley.v1 import history_pb2
from parley_common.context.assembly import ContextSource, PromptSettings, assemble_context
from parley_common.context.prompt import build_prompt
from parley_common.errors import InvalidRequest
from parley_common.models import ModelConfig, ModelRegistry, ProviderConfig
from parley_orchestrator.routing import ModelRouter


def msg(role: str, content: str, status: int = history_pb2.MESSAGE_STATUS_COMPLETE) -> history_pb2.Message:
    return history_pb2.Message(role=role, content=content, status=status)


def test_prompt_is_system_then_oldest_first() -> None:
    newest_first = [msg("user", "3"), msg("assistant", "2"), msg("user", "1")]
    prompt = build_prompt("sys", newest_first)
    assert [(m.role, m.content) for m in prompt] == [
        ("system", "sys"),
        ("user", "1"),
        ("assistant", "2"),
        ("user", "3"),
    ]


def test_failed_and_empty_answers_are_left_out_but_interrupted_ones_stay() -> None:
    newest_first = [
        msg("user", "again"),
        msg("assistant", "half an ans", history_pb2.MESSAGE_STATUS_INTERRUPTED),
        msg("assistant", "", history_pb2.MESSAGE_STATUS_COMPLETE),
        msg("assistant", "broken", history_pb2.MESSAGE_STATUS_FAILED),
        msg("user", "first"),
    ]
    prompt = build_prompt("", newest_first)
    assert [m.content for m in prompt] == ["first", "half an ans", "again"]


async def test_router_uses_the_default_follows_fallbacks_and_rejects_unknown_models() -> None:
    models = {
        name: ModelConfig(
            provider="p",
            upstream_model=f"up-{name}",
            context_window=1000,
            max_output_tokens=10,
            input_price_per_mtok=0,
            output_price_per_mtok=0,
            fallbacks=fallbacks,
        )
        for name, fallbacks in (("a", ("b",)), ("b", ("c", "a")), ("c", ()))
    }
    registry = ModelRegistry(default_model="a", providers={"p": ProviderConfig(kind="demo")}, models=models)
    router = ModelRouter(registry)
    question = ContextSource.conversation([msg("user", "hi")], complete=True)
    plan = await assemble_context(registry, PromptSettings(), question)
    assert router.route(plan.model).model == "a"
    assert [t.model for t in router.route("a").fallbacks] == ["b", "c"]
    assert [t.upstream_model for t in router.route("b").fallbacks] == ["up-c", "up-a"]
    try:
        router.route("gpt-9")
    except InvalidRequest as err:
        assert err.code == "unknown_model"
    else:
        raise AssertionError("unknown model accepted")
