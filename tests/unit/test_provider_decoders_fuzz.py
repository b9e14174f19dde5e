"""Property tests of the provider stream decoders: whatever well-formed JSON a provider (or a
proxy in front of it) streams, an adapter yields only its chunk types, with values the
worker can publish, or raises a typed ProviderError (which the retry policy, the metrics
and the client's `error` event understand). Never an AttributeError from deep inside."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from parley.v1 import chat_pb2
from parley_worker.providers import Chunk, Finish, Provider, TextChunk, UsageReport
from parley_worker.providers import anthropic as anthropic_wire
from parley_worker.providers import gemini as gemini_wire
from parley_worker.providers import openai as openai_wire
from parley_worker.providers.anthropic import AnthropicProvider
from parley_worker.providers.errors import BadResponse, ErrorDetail, ProviderError, ServerError
from parley_worker.providers.gemini import GeminiProvider
from parley_worker.providers.http import StreamTimeouts
from parley_worker.providers.openai import OpenAIProvider
from parley_worker.resilience import RetryPolicy

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TIMEOUTS = StreamTimeouts(connect_s=5, first_token_s=10, idle_s=10, total_s=30)
FINISH_REASONS = {"stop", "length", "content_filter", "other"}
Event = tuple[str, Any]  # (SSE event name, JSON payload)

# Real streams, as each API documents them: the seeds the mutations start from.
VALID: dict[str, list[Event]] = {
    "openai": [
        ("message", {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        ("message", {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}),
        ("message", {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
        ("message", {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
    ],
    "anthropic": [
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 5, "output_tokens": 1}}},
        ),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ],
    "gemini": [
        (
            "message",
            {
                "candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
            },
        ),
        (
            "message",
            {
                "candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7},
            },
        ),
    ],
}
# Names the decoders look for, so that random objects often reach the code that reads them.
KEYS = sorted(
    {"choices", "delta", "content", "finish_reason", "index", "usage", "prompt_tokens", "completion_tokens", "error"}
    | {"type", "message", "text", "stop_reason", "input_tokens", "output_tokens", "cache_read_input_tokens"}
    | {"candidates", "parts", "finishReason", "usageMetadata", "promptTokenCount", "candidatesTokenCount"}
    | {"thoughtsTokenCount", "thought", "promptFeedback", "blockReason", "code", "status", "details"}
)
EVENT_NAMES = sorted({name for events in VALID.values() for name, _ in events} | {"error", "message"})

keys = st.sampled_from(KEYS) | st.text(max_size=6)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["text_delta", "content_block_delta", "message_start", "message_delta", "message_stop", "STOP"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=20,
)


def sse(events: list[Event], *, done: bool) -> bytes:
    body = "".join(f"event: {name}\ndata: {json.dumps(payload)}\n\n" for name, payload in events)
    return (body + ("data: [DONE]\n\n" if done else "")).encode()


def make(name: str, client: httpx.AsyncClient) -> Provider:
    key = SecretStr("sk-fuzz")
    if name == "openai":
        return OpenAIProvider(name=name, base_url="http://fake/v1", api_key=key, client=client, timeouts=TIMEOUTS)
    if name == "anthropic":
        return AnthropicProvider(name=name, base_url="http://fake", api_key=key, client=client, timeouts=TIMEOUTS)
    return GeminiProvider(name=name, base_url="http://fake", api_key=key, client=client, timeouts=TIMEOUTS)


def decode(name: str, body: bytes) -> list[Chunk]:
    """What the provider's adapter makes of an HTTP 200 answer with this body."""
    job = chat_pb2.ProviderJob(
        provider=name, model=name, upstream_model="m", messages=[chat_pb2.PromptMessage(role="user", content="hi")]
    )

    async def run() -> list[Chunk]:
        transport = httpx.MockTransport(
            lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        )
        async with httpx.AsyncClient(transport=transport) as client:
            async with aclosing(make(name, client).stream(job)) as stream:  # type: ignore[type-var]
                return [chunk async for chunk in stream]

    return asyncio.run(run())


def assert_chunks_or_provider_error(name: str, events: list[Event], *, done: bool = True) -> None:
    try:
        chunks = decode(name, sse(events, done=done))
    except ProviderError as err:
        # Typed all the way: the policy knows the kind and the client gets a code for it.
        assert type(err) is not ProviderError and err.client_code
        return
    for chunk in chunks:
        assert type(chunk) in (TextChunk, UsageReport, Finish), chunk
        if isinstance(chunk, TextChunk):
            assert isinstance(chunk.text, str)
        elif isinstance(chunk, UsageReport):
            # What the worker builds from it: uint32 fields refuse anything else.
            chat_pb2.Usage(input_tokens=chunk.input_tokens, output_tokens=chunk.output_tokens)
        else:
            assert chunk.reason in FINISH_REASONS
    assert isinstance(chunks[-1], Finish) and isinstance(chunks[-2], UsageReport)


@st.composite
def mutated(draw: st.DrawFn, name: str) -> list[Event]:
    """A real stream of `name` with one value somewhere replaced by arbitrary JSON (or removed)."""
    events = copy.deepcopy(VALID[name])
    at = draw(st.integers(0, len(events) - 1))
    event_name, payload = events[at]
    if draw(st.booleans()):
        events[at] = (event_name, draw(json_values))
        return events
    node: Any = payload
    while True:
        children = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not children:
            break
        child = draw(st.sampled_from(children))
        deeper = node[child]
        if isinstance(deeper, (dict, list)) and deeper and draw(st.booleans()):
            node = deeper
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[child]
        else:
            node[child] = draw(json_values)
        break
    return events


def arbitrary(name: str) -> st.SearchStrategy[list[Event]]:
    """Random events, of the provider's event names, each around a random JSON object."""
    event = st.tuples(st.sampled_from(EVENT_NAMES), st.dictionaries(keys, json_values, max_size=5) | json_values)
    return st.lists(event, max_size=6)


@pytest.mark.parametrize("name", sorted(VALID))
def test_the_seed_streams_are_valid(name: str) -> None:
    chunks = decode(name, sse(VALID[name], done=name == "openai"))
    assert [c for c in chunks if isinstance(c, TextChunk)] == [TextChunk("Hi")]
    assert chunks[-2:] == [UsageReport(5, 2), Finish("stop")]


@FUZZ
@given(events=mutated("openai") | arbitrary("openai"), done=st.booleans())
@example(events=[("message", {"choices": ["x"]})], done=True)
@example(events=[("message", {"choices": [], "usage": {"prompt_tokens": "x"}})], done=True)
@example(events=[("message", {"choices": [{"delta": {"content": 7}, "finish_reason": "stop"}]})], done=True)
def test_openai_decoder_yields_chunks_or_a_provider_error(events: list[Event], done: bool) -> None:
    assert_chunks_or_provider_error("openai", events, done=done)


@FUZZ
@given(events=mutated("anthropic") | arbitrary("anthropic"))
@example(events=[("content_block_delta", {"type": "content_block_delta", "delta": "x"})])
@example(events=[("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": -3}}})])
@example(events=[("message_delta", {"type": "message_delta", "delta": {"stop_reason": ["x"]}})])
def test_anthropic_decoder_yields_chunks_or_a_provider_error(events: list[Event]) -> None:
    assert_chunks_or_provider_error("anthropic", events)


@FUZZ
@given(events=mutated("gemini") | arbitrary("gemini"))
@example(events=[("message", {"candidates": ["x"]})])
@example(events=[("message", {"promptFeedback": "x"})])
@example(events=[("message", {"candidates": [{"finishReason": {"a": 1}}]})])
@example(events=[("message", {"error": {"code": 429, "details": 5}})])
def test_gemini_decoder_yields_chunks_or_a_provider_error(events: list[Event]) -> None:
    assert_chunks_or_provider_error("gemini", events)


ERROR_READERS: dict[str, Callable[[int, bytes], ErrorDetail]] = {
    "openai": openai_wire.read_error,
    "anthropic": anthropic_wire.read_error,
    "gemini": gemini_wire.read_error,
}


@FUZZ
@given(
    name=st.sampled_from(sorted(ERROR_READERS)),
    status=st.sampled_from([400, 401, 403, 404, 429, 500, 503, 529]),
    body=json_values.map(lambda value: json.dumps(value).encode()) | st.binary(max_size=40),
)
@example(name="gemini", status=429, body=b'{"error": {"details": 5}}')
@example(name="gemini", status=400, body=b'[{"error": {"details": "API_KEY_INVALID"}}]')
def test_error_bodies_of_any_shape_read_as_a_message(name: str, status: int, body: bytes) -> None:
    # An error answer's body is read for its message; a body of a surprising shape must not
    # turn a typed HTTP error into a crash.
    detail = ERROR_READERS[name](status, body)
    assert isinstance(detail.message, str)


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_malformed_event_is_a_retryable_bad_response_that_falls_back(name: str) -> None:
    broken = {
        "openai": [("message", {"choices": ["x"]})],
        "anthropic": [("content_block_delta", {"type": "content_block_delta", "delta": "x"})],
        "gemini": [("message", {"candidates": ["x"]})],
    }[name]
    with pytest.raises(BadResponse) as caught:
        decode(name, sse(broken, done=True))
    err = caught.value
    assert isinstance(err, ServerError) and err.kind == "bad_response"
    assert err.client_code == "provider_bad_response"
    assert RetryPolicy().backoff_s(1, err) is not None and RetryPolicy.falls_back(err)
    assert "malformed" in str(err)
