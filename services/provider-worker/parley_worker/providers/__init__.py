"""Model providers: each turns a ProviderJob into a stream of text chunks and a usage report."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from parley.v1 import chat_pb2
from parley_common.models import ModelConfig


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class UsageReport:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Finish:
    # "stop", "length", "content_filter" (a safety block or the model's refusal), or "other":
    # the provider stopped for another reason, or one the adapter does not know (not a clean stop).
    reason: str


Chunk = TextChunk | UsageReport | Finish


class Provider(Protocol):
    name: str

    def stream(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        """Text chunks in order, then a UsageReport and a Finish.

        A UsageReport may also come earlier (Anthropic reports the prompt's tokens before
        the first text): each replaces the one before, so a stream cancelled or cut off
        midway still carries the usage known so far, and the last one is the final count.
        """
        ...


def alternating_turns(
    messages: Iterable[chat_pb2.PromptMessage],
    assistant_role: str,
    content_key: str,
    parts_of: Callable[[chat_pb2.PromptMessage, str], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """The conversation as strictly alternating turns, for APIs that require it (Anthropic,
    Gemini): system messages left out (they go in a field of their own), empty ones skipped,
    same-role neighbours merged into one turn, and opening with the user: both APIs refuse
    a conversation that starts with the model, and trimming can leave an answer whose
    question was cut (alone it is of little use, so it goes too). `parts_of(message, role)`
    gives a message's content parts in the API's format; each turn is
    {"role": role, content_key: parts}."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = assistant_role if message.role == "assistant" else "user"
        parts = parts_of(message, role)
        if not parts:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1][content_key].extend(parts)
        else:
            turns.append({"role": role, content_key: parts})
    while turns and turns[0]["role"] == assistant_role:
        turns.pop(0)
    return turns


async def without_shown_tail(chunks: AsyncGenerator[Chunk, None], tail: str) -> AsyncGenerator[Chunk, None]:
    """`chunks` with `tail` left out of the start of their text, as far as the text repeats it:
    the trailing whitespace of a partial answer that was shown but left out of the prefill a
    provider continues from (Anthropic refuses one ending in whitespace), which the model then
    writes again. Text that does not repeat it is kept whole."""
    pending = tail
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            if pending and isinstance(chunk, TextChunk):
                same = 0
                while same < min(len(chunk.text), len(pending)) and chunk.text[same] == pending[same]:
                    same += 1
                if same == len(chunk.text):
                    pending = pending[same:]
                    continue
                pending = ""
                chunk = TextChunk(chunk.text[same:])
            yield chunk


def temperature_for(job: chat_pb2.ProviderJob, spec: ModelConfig | None) -> float | None:
    """The temperature to send for `job`, or None to leave the field out: the user's (0
    included), else the model's registry default; never for a model that refuses the field
    (ModelConfig.temperature_to_send). Without a registry entry, only the user's."""
    # The bus carries a float32 (0.7 arrives as 0.699999988...): six decimals give back what was asked.
    requested = round(job.temperature, 6) if job.has_temperature else None
    return spec.temperature_to_send(requested) if spec is not None else requested


def model_client_key(provider: str, model: str) -> str:
    """The key, among a worker's provider clients, of the client for one model that is served at
    a base_url of its own (the registry's per-model `base_url`)."""
    return f"{provider}@{model}"
