"""The official openai SDK, pointed at Parley, works unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from parley_dev.stack import Stack
from tests.support.keys import DEV_KEY


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{stack.base_url}/v1", api_key=DEV_KEY, max_retries=0) as client:
        yield client


async def test_models_lists_the_registry(sdk: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in sdk.models.list()]
    assert models == ["demo"]


async def test_non_streaming_completion(sdk: openai.AsyncOpenAI, client: httpx.AsyncClient) -> None:
    before = (await client.get("/v1/conversations")).json()["data"]
    completion = await sdk.chat.completions.create(
        model="demo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello from the SDK"}],
    )
    assert completion.object == "chat.completion"
    message = completion.choices[0].message
    assert message.role == "assistant" and message.content is not None
    assert message.content.startswith('You said: "Hello from the SDK".')
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    # Stateless: no conversation was created for it.
    assert (await client.get("/v1/conversations")).json()["data"] == before


async def test_streaming_completion_with_usage(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": "Stream to the SDK"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=200,
    )
    text, finish, usage, chunks = "", None, None, 0
    async for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert chunks > 5, "streamed in pieces"
    assert text.startswith('You said: "Stream to the SDK".')
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 5


async def test_max_tokens_cuts_the_answer_with_length(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "cut me short"}], max_tokens=3
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 3


async def test_unknown_model_and_bad_key_are_sdk_errors(sdk: openai.AsyncOpenAI, stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert bad.value.status_code == 400
    async with openai.AsyncOpenAI(
        base_url=f"{stack.base_url}/v1", api_key="pk_wrong_wrong_wrong", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
