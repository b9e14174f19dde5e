"""The embedded demo provider: a deterministic answer derived from the prompt, streamed at a
realistic pace (a first-token delay, then a steady rate), so Parley runs with no API key.
A job that continues a partial answer (`continue_from`) gets the rest of the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncGenerator

from parley.v1 import chat_pb2

from . import Chunk, Finish, TextChunk, UsageReport

_SENTENCES = (
    "Parley streams every answer token by token, like a typewriter.",
    "This reply comes from the built-in demo model, so no API key is needed.",
    "Each token travelled from a provider worker through RabbitMQ to your screen.",
    "Your message is already saved in the conversation history.",
    "Point Parley at OpenAI, Anthropic or Gemini to talk to a real model.",
    "A dropped connection can resume from the last event id it received.",
    "The same question always gets the same demo answer.",
    "Budgets, routing and context trimming happen before a provider is called.",
)
_TOKEN = re.compile(r"\s*\S+")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(text)


def demo_answer(messages: list[chat_pb2.PromptMessage]) -> str:
    """The answer the demo model gives to this prompt: the same prompt, the same answer."""
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    digest = hashlib.sha256("\x1e".join(f"{m.role}:{m.content}" for m in messages).encode()).digest()
    quoted = " ".join(last_user.split())
    if len(quoted) > 120:
        quoted = quoted[:117] + "..."
    picked = [_SENTENCES[b % len(_SENTENCES)] for b in digest[:3]]
    # Drop repeats but keep the digest's order.
    unique = list(dict.fromkeys(picked))
    return f'You said: "{quoted}". ' + " ".join(unique)


def continuation(answer: str, shown: str) -> list[str]:
    """The pieces of `answer` that follow the partial answer `shown` ("" for the whole answer):
    its rest when `shown` is the start of it, else the pieces past as many as `shown` has (a
    text the demo did not write, edited or from another model, goes on all the same)."""
    if answer.startswith(shown):
        return _words(answer[len(shown) :])
    return _words(answer)[len(_words(shown)) :]


class DemoProvider:
    name = "demo"

    def __init__(self, first_token_delay_s: float, tokens_per_s: float) -> None:
        self.first_token_delay_s = first_token_delay_s
        self.tokens_per_s = tokens_per_s

    async def stream(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        pieces = continuation(demo_answer(list(job.messages)), job.continue_from)
        limit = job.max_output_tokens or len(pieces)
        start = time.monotonic() + self.first_token_delay_s
        for i, piece in enumerate(pieces[:limit]):
            # An absolute schedule, so the pace does not drift with scheduling delays.
            delay = start + i / self.tokens_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield TextChunk(piece)
        prompt_tokens = sum(len(_words(m.content)) + 3 for m in job.messages)
        yield UsageReport(input_tokens=prompt_tokens, output_tokens=min(limit, len(pieces)))
        yield Finish("length" if limit < len(pieces) else "stop")
