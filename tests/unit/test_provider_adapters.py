"""Each adapter against the fake provider server, in-process through httpx's ASGITransport.

ASGITransport hands the client a response only once the app has finished it, so what
depends on time or on a half-sent body (timeouts, drops, hang-ups) is tested against the
same fake on a real socket in test_provider_streaming.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig
from parley_dev.fake_providers import FakeProviderApp, answer_tokens
from parley_worker.providers import Chunk, Finish, Provider, TextChunk, UsageReport
from parley_worker.providers import anthropic as anthropic_wire
from parley_worker.providers import gemini as gemini_wire
from parley_worker.providers import openai as openai_wire
from parley_worker.providers.anthropic import AnthropicProvider
from parley_worker.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    BadResponse,
    ContextLengthExceeded,
    Overloaded,
    ProviderError,
    ProviderRateLimited,
    ServerError,
)
from parley_worker.providers.gemini import GeminiProvider
from parley_worker.providers.http import StreamTimeouts
from parley_worker.providers.openai import OpenAIProvider

KEY = SecretStr("sk-test-secret-key-123")
TIMEOUTS = StreamTimeouts(connect_s=5, first_token_s=10, idle_s=10, total_s=30)
PNG = b"\x89PNG\r\n\x1a\nfake-image-bytes"
Factory = Callable[[str, httpx.AsyncClient], Provider]
FACTORIES: dict[str, Factory] = {
    "openai": lambda base, client: OpenAIProvider(
        name="openai", base_url=f"{base}/v1", api_key=KEY, client=client, timeouts=TIMEOUTS
    ),
    "anthropic": lambda base, client: AnthropicProvider(
        name="anthropic", base_url=base, api_key=KEY, client=client, timeouts=TIMEOUTS
    ),
    "gemini": lambda base, client: GeminiProvider(
        name="gemini", base_url=base, api_key=KEY, client=client, timeouts=TIMEOUTS
    ),
}
MODELS = {"openai": "gpt-test", "anthropic": "claude-test", "gemini": "gemini-test"}


def job(
    provider: str,
    text: str,
    *,
    images: list[chat_pb2.ImagePart] | None = None,
    max_output_tokens: int = 0,
    history: list[chat_pb2.PromptMessage] | None = None,
) -> chat_pb2.ProviderJob:
    return chat_pb2.ProviderJob(
        provider=provider,
        model=provider,
        upstream_model=MODELS[provider],
        max_output_tokens=max_output_tokens,
        temperature=0.5,
        has_temperature=True,
        messages=[
            chat_pb2.PromptMessage(role="system", content="be brief"),
            *(history or []),
            chat_pb2.PromptMessage(role="user", content=text, images=images or []),
        ],
    )


async def collect(provider: Provider, job: chat_pb2.ProviderJob) -> list[Chunk]:
    async with aclosing(provider.stream(job)) as stream:  # type: ignore[type-var]
        return [chunk async for chunk in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextChunk))


@pytest.fixture
def fake() -> FakeProviderApp:
    return FakeProviderApp()


@pytest.fixture
async def client(fake: FakeProviderApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as client:
        yield client


@pytest.fixture(params=sorted(FACTORIES))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def provider(name: str, client: httpx.AsyncClient) -> Provider:
    return FACTORIES[name]("http://fake", client)


async def test_a_normal_answer_is_text_then_usage_then_finish(
    name: str, provider: Provider, fake: FakeProviderApp
) -> None:
    chunks = await collect(provider, job(name, "What is Parley?"))
    assert text_of(chunks) == "".join(answer_tokens("What is Parley?"))
    seen = fake.requests[-1]
    assert (seen.format, seen.model, seen.auth, seen.completed) == (name, MODELS[name], True, True)
    assert chunks[-2:] == [UsageReport(seen.input_tokens, seen.output_tokens), Finish("stop")]
    assert seen.output_tokens == sum(isinstance(c, TextChunk) for c in chunks) > 0


async def test_max_output_tokens_ends_with_length(name: str, provider: Provider, fake: FakeProviderApp) -> None:
    chunks = await collect(provider, job(name, "Tell me everything", max_output_tokens=3))
    assert sum(isinstance(c, TextChunk) for c in chunks) == 3
    assert chunks[-2:] == [UsageReport(fake.requests[-1].input_tokens, 3), Finish("length")]


async def test_a_very_long_answer_arrives_whole(name: str, provider: Provider, fake: FakeProviderApp) -> None:
    chunks = await collect(provider, job(name, 'Go on [[fake {"tokens": 3000}]]'))
    assert text_of(chunks) == "".join(answer_tokens("Go on", 3000))
    assert chunks[-2] == UsageReport(fake.requests[-1].input_tokens, 3000)


async def test_images_go_in_each_providers_own_format(name: str, provider: Provider, fake: FakeProviderApp) -> None:
    images = [
        chat_pb2.ImagePart(media_id="m1", url="https://media.example/cat.webp", mime_type="image/webp", detail="low"),
        chat_pb2.ImagePart(media_id="m2", data=PNG, mime_type="image/png", detail="high"),
    ]
    await collect(provider, job(name, "What is in these pictures?", images=images))
    body = fake.requests[-1].body
    encoded = "iVBORw0KGgpmYWtlLWltYWdlLWJ5dGVz"  # base64 of PNG
    if name == "openai":
        assert body["messages"][-1]["content"] == [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image_url", "image_url": {"url": "https://media.example/cat.webp", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}", "detail": "high"}},
        ]
    elif name == "anthropic":
        assert body["messages"][-1]["content"] == [
            {"type": "image", "source": {"type": "url", "url": "https://media.example/cat.webp"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": encoded}},
            {"type": "text", "text": "What is in these pictures?"},
        ]
    else:
        assert body["contents"][-1]["parts"] == [
            {"fileData": {"mimeType": "image/webp", "fileUri": "https://media.example/cat.webp"}},
            {"inlineData": {"mimeType": "image/png", "data": encoded}},
            {"text": "What is in these pictures?"},
        ]
    assert fake.requests[-1].input_tokens > 2 * 85


async def test_an_image_without_a_mime_type_is_a_bad_request_before_any_call(
    name: str, provider: Provider, fake: FakeProviderApp
) -> None:
    with pytest.raises(BadRequest):
        await collect(provider, job(name, "look", images=[chat_pb2.ImagePart(media_id="m", data=PNG)]))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("directive", "error_type", "status"),
    [
        ({"status": 429}, ProviderRateLimited, 429),
        ({"status": 503}, Overloaded, 503),
        ({"status": 529}, Overloaded, 529),
        ({"status": 500}, ServerError, 500),
        ({"status": 502}, ServerError, 502),
        ({"status": 504}, ServerError, 504),
        ({"context_length_exceeded": True}, ContextLengthExceeded, 400),
        ({"status": 400}, BadRequest, 400),
        ({"status": 404}, BadRequest, 404),
        ({"status": 401}, AuthenticationFailed, 401),
        ({"status": 403}, AuthenticationFailed, 403),
    ],
)
async def test_http_errors_become_typed_errors(
    name: str, provider: Provider, directive: dict[str, Any], error_type: type[ProviderError], status: int
) -> None:
    with pytest.raises(error_type) as caught:
        await collect(provider, job(name, f"hello [[fake {json.dumps(directive)}]]"))
    assert (caught.value.status, caught.value.provider) == (status, name)
    assert KEY.get_secret_value() not in str(caught.value)


async def test_rate_limits_say_how_long_to_wait(name: str, provider: Provider) -> None:
    # OpenAI and Anthropic send a retry-after header; Gemini puts RetryInfo in the body.
    with pytest.raises(ProviderRateLimited) as caught:
        await collect(provider, job(name, 'hello [[fake {"status": 429, "retry_after": 2.5}]]'))
    assert caught.value.retry_after_s == 2.5
    assert caught.value.retryable and not caught.value.fallback_worthy


@pytest.mark.parametrize(
    ("stream_error", "error_type"),
    [("overloaded", Overloaded), ("server_error", ServerError), ("rate_limited", ProviderRateLimited)],
)
async def test_an_error_event_mid_stream_becomes_a_typed_error(
    name: str, provider: Provider, stream_error: str, error_type: type[ProviderError]
) -> None:
    directive = {"error_after": 2, "stream_error": stream_error}
    received: list[Chunk] = []
    with pytest.raises(error_type) as caught:
        async with aclosing(provider.stream(job(name, f"hi [[fake {json.dumps(directive)}]]"))) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                received.append(chunk)
    # Anthropic reports the prompt's tokens before the text (a UsageReport); the text is what counts here.
    assert [c for c in received if not isinstance(c, UsageReport)] == [TextChunk("Fake"), TextChunk(" answer")]
    assert caught.value.status is None
    assert "mid-stream" in str(caught.value)


async def test_failing_only_the_first_attempts_of_a_key(name: str, provider: Provider, fake: FakeProviderApp) -> None:
    prompt = 'retry me [[fake {"status": 503, "times": 2, "key": "k1"}]]'
    for _ in range(2):
        with pytest.raises(Overloaded):
            await collect(provider, job(name, prompt))
    chunks = await collect(provider, job(name, prompt))
    assert text_of(chunks) == "".join(answer_tokens("retry me"))
    assert [r.directive_applied for r in fake.requests] == [True, True, False]


async def test_openai_compatible_server_without_usage_reports_zeros_and_says_so(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    provider = OpenAIProvider(name="ollama", base_url="http://fake/v1", api_key=None, client=client, timeouts=TIMEOUTS)
    with caplog.at_level(logging.WARNING, logger="parley_worker.providers.openai"):
        chunks = await collect(provider, job("openai", 'hi [[fake {"no_usage": true}]]'))
    assert chunks[-2:] == [UsageReport(0, 0), Finish("stop")]
    assert "no token usage" in caplog.text


async def test_openai_request_shape(client: httpx.AsyncClient, fake: FakeProviderApp) -> None:
    provider = FACTORIES["openai"]("http://fake", client)
    await collect(provider, job("openai", "hello", max_output_tokens=50))
    body = fake.requests[-1].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert (body["max_tokens"], body["temperature"]) == (50, 0.5)


async def test_anthropic_request_shape(client: httpx.AsyncClient, fake: FakeProviderApp) -> None:
    history = [
        chat_pb2.PromptMessage(role="assistant", content="an answer whose question was trimmed"),
        chat_pb2.PromptMessage(role="user", content="first"),
        chat_pb2.PromptMessage(role="user", content="second"),
        chat_pb2.PromptMessage(role="assistant", content="an answer"),
        chat_pb2.PromptMessage(role="system", content="and be kind"),
    ]
    await collect(FACTORIES["anthropic"]("http://fake", client), job("anthropic", "third", history=history))
    body = fake.requests[-1].body
    assert body["system"] == "be brief\n\nand be kind"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
        {"role": "user", "content": [{"type": "text", "text": "third"}]},
    ]
    assert (body["max_tokens"], body["stream"], body["temperature"]) == (anthropic_wire.DEFAULT_MAX_TOKENS, True, 0.5)


async def test_gemini_request_shape(client: httpx.AsyncClient, fake: FakeProviderApp) -> None:
    history = [
        chat_pb2.PromptMessage(role="user", content="first"),
        chat_pb2.PromptMessage(role="assistant", content="an answer"),
    ]
    provider = FACTORIES["gemini"]("http://fake", client)
    await collect(provider, job("gemini", "second", history=history, max_output_tokens=64))
    seen = fake.requests[-1]
    assert seen.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert seen.body == {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "an answer"}]},
            {"role": "user", "parts": [{"text": "second"}]},
        ],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 64, "temperature": 0.5},
    }
    assert gemini_wire.request_body(job("gemini", "x")).get("generationConfig") == {"temperature": 0.5}


async def test_the_key_never_appears_in_an_error_even_when_the_provider_echoes_it(name: str) -> None:
    secret = KEY.get_secret_value()

    def echo(request: httpx.Request) -> httpx.Response:
        text = f"Incorrect API key provided: {secret}"
        body = {"error": {"message": text, "type": "invalid_request_error", "status": "UNAUTHENTICATED"}}
        return httpx.Response(401, json=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(echo)) as client:
        with pytest.raises(AuthenticationFailed) as caught:
            await collect(FACTORIES[name]("http://fake", client), job(name, "hi"))
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert "[redacted]" in str(caught.value)


async def test_gemini_bad_key_400_is_an_auth_error() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json=body))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(AuthenticationFailed):
            await collect(FACTORIES["gemini"]("http://fake", client), job("gemini", "hi"))


async def test_a_stream_that_ends_without_finishing_is_a_connection_error(name: str) -> None:
    # A proxy that answers 200 with an empty body: nothing says the answer was complete.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b": hello\n\n"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ProviderError) as caught:
            await collect(FACTORIES[name]("http://fake", client), job(name, "hi"))
    assert caught.value.kind == "connection"


async def test_unreadable_events_are_a_server_error(name: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=b"data: {not json\n\n"))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(ServerError):
            await collect(FACTORIES[name]("http://fake", client), job(name, "hi"))


def test_anthropic_and_gemini_get_alternating_turns_opening_with_the_user() -> None:
    P = chat_pb2.PromptMessage
    messages = [
        P(role="system", content="be brief"),
        P(role="assistant", content="orphan answer"),
        P(role="user", content="one"),
        P(role="user", content="two"),
        P(role="assistant", content=""),
        P(role="assistant", content="reply"),
        P(role="user", content="three"),
    ]
    claude = chat_pb2.ProviderJob(provider="anthropic", upstream_model="m", messages=messages)
    body = anthropic_wire.request_body(claude)
    assert body["system"] == "be brief"
    assert [(t["role"], [b["text"] for b in t["content"]]) for t in body["messages"]] == [
        ("user", ["one", "two"]),
        ("assistant", ["reply"]),
        ("user", ["three"]),
    ], "an answer whose question was trimmed away goes; same-role neighbours become one turn"
    gemini = gemini_wire.request_body(chat_pb2.ProviderJob(provider="gemini", upstream_model="m", messages=messages))
    assert gemini["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [(t["role"], [p["text"] for p in t["parts"]]) for t in gemini["contents"]] == [
        ("user", ["one", "two"]),
        ("model", ["reply"]),
        ("user", ["three"]),
    ]


async def test_an_anthropic_answer_cut_short_still_reports_the_prompts_tokens(
    client: httpx.AsyncClient, fake: FakeProviderApp
) -> None:
    # message_start carries the input tokens; they are reported at once, so the worker (which
    # keeps the last UsageReport) bills a cancelled or failed answer for the prompt it sent.
    provider = FACTORIES["anthropic"]("http://fake", client)
    cancelled: list[Chunk] = []
    async with aclosing(provider.stream(job("anthropic", "What is Parley?"))) as stream:  # type: ignore[type-var]
        async for chunk in stream:
            cancelled.append(chunk)
            if isinstance(chunk, TextChunk):
                break  # the user cancels after the first token: the worker stops reading
    input_tokens = fake.requests[-1].input_tokens
    assert input_tokens > 0
    assert [c for c in cancelled if isinstance(c, UsageReport)] == [UsageReport(input_tokens, 1)]
    assert isinstance(cancelled[-1], TextChunk), "the usage came before the text, not after"

    failed: list[Chunk] = []
    directive = {"error_after": 2, "stream_error": "overloaded"}
    with pytest.raises(Overloaded):
        async with aclosing(provider.stream(job("anthropic", f"hi [[fake {json.dumps(directive)}]]"))) as stream:  # type: ignore[type-var]
            async for chunk in stream:
                failed.append(chunk)
    usage = [c for c in failed if isinstance(c, UsageReport)]
    assert usage == [UsageReport(fake.requests[-1].input_tokens, 1)] and usage[0].input_tokens > 0


def spec(provider: str = "openai", **options: Any) -> ModelConfig:
    """A registry entry for the model a job names (`job()` names it after its provider)."""
    return ModelConfig(
        provider=provider,
        upstream_model=MODELS.get(provider, "m"),
        context_window=8192,
        max_output_tokens=1024,
        input_price_per_mtok=0,
        output_price_per_mtok=0,
        **options,
    )


def temperature_sent(name: str, job: chat_pb2.ProviderJob, model: ModelConfig | None = None) -> float | None:
    """The temperature each adapter's request carries, None when the field is left out."""
    if name == "openai":
        return openai_wire.request_body(job, spec=model).get("temperature")
    if name == "anthropic":
        return anthropic_wire.request_body(job, spec=model).get("temperature")
    return gemini_wire.request_body(job, spec=model).get("generationConfig", {}).get("temperature")


def test_a_temperature_of_zero_is_sent_and_an_unset_one_is_not(name: str) -> None:
    # Before: 0 was dropped (proto3 cannot tell it from unset), so the provider sampled at its
    # default while the response cache stored the answer as deterministic; and every job
    # carried the orchestrator's 1.0 when the user set nothing.
    zero = job(name, "x")
    zero.temperature = 0.0
    assert temperature_sent(name, zero) == 0.0
    unset = job(name, "x")
    unset.ClearField("has_temperature")
    unset.temperature = 1.0  # what an older orchestrator put in every job
    assert temperature_sent(name, unset) is None
    assert temperature_sent(name, unset, spec(name, temperature=0.2)) == 0.2, "the registry's default"
    assert temperature_sent(name, zero, spec(name, temperature=0.2)) == 0.0, "the user's choice wins"
    warm = job(name, "x")
    warm.temperature = 0.7  # a float32 field: it reads back as 0.699999988...
    assert temperature_sent(name, warm) == 0.7


def test_a_model_that_refuses_the_temperature_field_never_gets_one(name: str) -> None:
    # OpenAI's reasoning models answer 400 "Unsupported parameter: 'temperature'"; the
    # registry says so (accepts_temperature: false) and the user's temperature is not sent.
    assert temperature_sent(name, job(name, "x"), spec(name, accepts_temperature=False)) is None


async def test_the_openai_output_limit_field_is_the_models_registry_entrys() -> None:
    # Not the host name: OpenAI's own reasoning models take only `max_completion_tokens`,
    # while vLLM, Ollama and llama.cpp document `max_tokens` (the default).
    sent: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, content=openai_refusal_stream(["x"]))

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        for models in ({}, {"openai": spec(max_tokens_field="max_completion_tokens")}):
            provider = OpenAIProvider(
                name="openai",
                base_url="https://api.openai.com/v1",
                api_key=KEY,
                client=client,
                timeouts=TIMEOUTS,
                models=models,
            )
            await collect(provider, job("openai", "hello", max_output_tokens=9))
    assert sent[0]["max_tokens"] == 9 and "max_completion_tokens" not in sent[0]
    assert sent[1]["max_completion_tokens"] == 9 and "max_tokens" not in sent[1]


def gemini_stream(*events: dict[str, Any], tail: bytes = b"") -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events) + tail


def gemini_text(text: str, finish: str | None = None, prompt_tokens: int = 2304) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": "gemini-2.0-flash",
    }


def pretty_error(code: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}, indent=2).encode()


async def decode_gemini(body: bytes) -> tuple[list[Chunk], ProviderError | None]:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    received: list[Chunk] = []
    async with httpx.AsyncClient(transport=transport) as client:
        try:
            async with aclosing(FACTORIES["gemini"]("http://fake", client).stream(job("gemini", "hi"))) as stream:  # type: ignore[type-var]
                async for chunk in stream:
                    received.append(chunk)
        except ProviderError as err:
            return received, err
    return received, None


@pytest.mark.parametrize(
    ("code", "status", "error_type"),
    [
        (503, "UNAVAILABLE", Overloaded),
        (429, "RESOURCE_EXHAUSTED", ProviderRateLimited),
        (500, "INTERNAL", ServerError),
    ],
)
@pytest.mark.parametrize("after_finish", [True, False], ids=["after-finish", "before-finish"])
async def test_a_gemini_error_written_after_the_events_is_the_providers_error(
    code: int, status: str, error_type: type[ProviderError], after_finish: bool
) -> None:
    """The stream of vercel/ai#5217, as Gemini sent it: text, a chunk with finishReason STOP,
    then the error object pretty-printed outside any `data:` line. It was dropped: after the
    finish reason the truncated answer ended as a clean stop; without one, the answer ended as
    a dropped connection (retried, never falling back, the provider's message lost)."""
    events = [gemini_text("Okay")] + ([gemini_text("", finish="STOP", prompt_tokens=2301)] if after_finish else [])
    message = "The model is overloaded. Please try again later."
    received, err = await decode_gemini(gemini_stream(*events, tail=pretty_error(code, status, message)))
    assert isinstance(err, error_type), received
    assert message in str(err) and status in str(err)
    assert [c for c in received if isinstance(c, TextChunk)] == [TextChunk("Okay")]
    assert not any(isinstance(c, Finish) for c in received), "never a clean end"
    assert [c for c in received if isinstance(c, UsageReport)][-1].input_tokens > 0, "the usage known so far is kept"


async def test_gemini_text_outside_the_events_that_is_no_error_is_a_bad_response() -> None:
    _, err = await decode_gemini(gemini_stream(gemini_text("Hi", finish="STOP"), tail=b"<html>oops</html>"))
    assert isinstance(err, BadResponse)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        *[
            (r, "content_filter")
            for r in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
        ],
        *[(r, "other") for r in ("OTHER", "LANGUAGE", "MALFORMED_FUNCTION_CALL", "FINISH_REASON_UNSPECIFIED")],
        ("A_REASON_NOT_INVENTED_YET", "other"),
    ],
)
async def test_gemini_finish_reasons_say_why_the_answer_stopped(
    client: httpx.AsyncClient, reason: str, finish: str
) -> None:
    # The FinishReason enum of the Gemini API reference (Candidate.FinishReason); anything
    # else, or OTHER, is not a clean stop.
    directive = json.dumps({"finish_reason": reason})
    chunks = await collect(FACTORIES["gemini"]("http://fake", client), job("gemini", f"hi [[fake {directive}]]"))
    assert chunks[-1] == Finish(finish)


async def test_an_unknown_finish_reason_is_not_a_clean_stop(name: str, provider: Provider) -> None:
    chunks = await collect(provider, job(name, 'hi [[fake {"finish_reason": "something_new"}]]'))
    assert chunks[-1] == Finish("other")
    assert text_of(chunks) == "".join(answer_tokens("hi"))


# The shape of openai-python's recorded stream of a refused structured output
# (tests/lib/chat/test_completions_streaming.py::test_parse_pydantic_model_refusal,
# .inline-snapshot/external/ca015b8b1eba*.bin): `content` null, the text in `delta.refusal`,
# finish_reason "stop", then the usage chunk and [DONE].
def openai_refusal_stream(pieces: list[str]) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": None, "refusal": ""})]
    events += [chunk({"refusal": piece}) for piece in pieces]
    events += [chunk({}, "stop"), {**base, "choices": [], "usage": {"prompt_tokens": 17, "completion_tokens": 12}}]
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


async def test_an_openai_refusal_is_shown_and_ends_as_content_filter() -> None:
    # Before: `delta.refusal` was ignored, so the user saw an empty answer that ended "stop".
    pieces = ["I'm", " sorry", ",", " but", " I", " can't", " assist", " with", " that", " request", "."]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=openai_refusal_stream(pieces)))
    async with httpx.AsyncClient(transport=transport) as client:
        chunks = await collect(FACTORIES["openai"]("http://fake", client), job("openai", "hi"))
    assert text_of(chunks) == "I'm sorry, but I can't assist with that request."
    assert chunks[-2:] == [UsageReport(17, 12), Finish("content_filter")]
