"""Model providers: each turns a ProviderJob into a stream of text chunks and a usage report."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from parley.v1 import chat_pb2


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class UsageReport:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" or "length"


Chunk = TextChunk | UsageReport | Finish


class Provider(Protocol):
    name: str

    def stream(self, job: chat_pb2.ProviderJob) -> AsyncGenerator[Chunk, None]:
        """Text chunks in order, then a UsageReport and a Finish."""
        ...
