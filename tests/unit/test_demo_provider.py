from __future__ import annotations

from parley.v1 import chat_pb2
from parley_worker.providers import Finish, TextChunk, UsageReport
from parley_worker.providers.demo import DemoProvider, demo_answer


def job(content: str, max_output_tokens: int = 0) -> chat_pb2.ProviderJob:
    return chat_pb2.ProviderJob(
        messages=[
            chat_pb2.PromptMessage(role="system", content="be brief"),
            chat_pb2.PromptMessage(role="user", content=content),
        ],
        max_output_tokens=max_output_tokens,
    )


def test_same_prompt_same_answer_and_it_quotes_the_user() -> None:
    a = demo_answer(list(job("What is Parley?").messages))
    assert a == demo_answer(list(job("What is Parley?").messages))
    assert a.startswith('You said: "What is Parley?".')
    assert a != demo_answer(list(job("Something else entirely").messages))


def test_long_messages_are_quoted_shortened() -> None:
    answer = demo_answer(list(job("word " * 500).messages))
    assert len(answer) < 1000
    assert "..." in answer


async def test_stream_yields_the_answer_then_usage_then_finish() -> None:
    provider = DemoProvider(first_token_delay_s=0, tokens_per_s=100_000)
    chunks = [c async for c in provider.stream(job("hello there"))]
    text = "".join(c.text for c in chunks if isinstance(c, TextChunk))
    assert text == demo_answer(list(job("hello there").messages))
    usage = [c for c in chunks if isinstance(c, UsageReport)]
    assert len(usage) == 1 and usage[0].output_tokens == sum(isinstance(c, TextChunk) for c in chunks)
    assert chunks[-1] == Finish("stop")


async def test_max_output_tokens_cuts_the_answer_with_finish_length() -> None:
    provider = DemoProvider(first_token_delay_s=0, tokens_per_s=100_000)
    chunks = [c async for c in provider.stream(job("hello there", max_output_tokens=3))]
    assert sum(isinstance(c, TextChunk) for c in chunks) == 3
    assert chunks[-1] == Finish("length")
