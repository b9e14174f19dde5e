"""Token counts: offline encodings, OpenAI's chat format, provider image rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

from parley.v1 import chat_pb2
from parley_common.context.image_tokens import image_tokens
from parley_common.context.tokens import counter_for, install_offline_encodings

install_offline_encodings()
CL100K = tiktoken.get_encoding("cl100k_base")

SAMPLES = [
    "",
    "Hello, world!",
    "tiktoken is great!",
    "お誕生日おめでとう",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "Emoji 🎉🚀 and accents: déjà vu, naïve café.",
    "   leading and trailing spaces   \n\n\t",
    "<|endoftext|> is just text here",
    "A" * 5000,
    "The quick brown fox jumps over the lazy dog. " * 40,
]


def cookbook_count(messages: list[dict[str, str]]) -> int:
    """OpenAI's num_tokens_from_messages for gpt-4-0613 / gpt-4o (3 per message, 1 per name, 3 priming)."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(CL100K.encode(value, disallowed_special=()))
            if key == "name":
                total += 1
    return total + 3


@pytest.mark.parametrize("text", SAMPLES)
def test_text_counts_equal_tiktoken(text: str) -> None:
    assert counter_for("openai", "cl100k_base").text(text) == len(CL100K.encode(text, disallowed_special=()))


def test_chat_counts_follow_the_cookbook() -> None:
    conversation = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Tell me about OpenAI."},
        {"role": "assistant", "content": "OpenAI is an AI research and deployment company."},
        {"role": "user", "content": "お誕生日おめでとう 🎉"},
    ]
    counter = counter_for("openai", "cl100k_base")
    prompt = [chat_pb2.PromptMessage(role=m["role"], content=m["content"]) for m in conversation]
    assert counter.prompt(prompt) == cookbook_count(conversation)
    assert not counter.estimated


def test_the_cookbook_example_matches_what_the_openai_api_reported() -> None:
    # The cookbook's example: the API reported 129 prompt tokens for gpt-4-0613 (cl100k_base).
    named = [
        (
            "system",
            "",
            "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
        ),
        ("system", "example_user", "New synergies will help drive top-line growth."),
        ("system", "example_assistant", "Things working well together will increase revenue."),
        (
            "system",
            "example_user",
            "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
        ),
        ("system", "example_assistant", "Let's talk later when we're less busy about how to do better."),
        ("user", "", "This late pivot means we don't have time to boil the ocean for the client deliverable."),
    ]
    counter = counter_for("openai", "cl100k_base")
    prompt = [chat_pb2.PromptMessage(role=role, content=content) for role, _, content in named]
    # Parley's messages carry no `name`; the API adds its tokens plus one per named message.
    names = sum(counter.text(name) + 1 for _, name, _ in named if name)
    assert counter.prompt(prompt) + names == 129


def test_encodings_not_shipped_and_other_providers_are_marked_estimated() -> None:
    assert counter_for("openai", "o200k_base").estimated
    assert counter_for("anthropic", "cl100k_base").estimated
    assert counter_for("gemini", "cl100k_base").estimated
    assert not counter_for("demo", "cl100k_base").estimated
    # The nearest shipped encoding still gives a real count.
    assert counter_for("openai", "o200k_base").text("hello world") == 2


def test_images_are_counted_by_each_providers_rule() -> None:
    # OpenAI: 1024x1024 high -> 768x768 -> 4 tiles; 2048x4096 -> 768x1536 -> 6 tiles; low is flat.
    assert image_tokens("openai", 1024, 1024, "high") == 85 + 4 * 170
    assert image_tokens("openai", 2048, 4096, "high") == 85 + 6 * 170
    assert image_tokens("openai", 4096, 8192, "low") == 85
    assert image_tokens("openai", 100, 100, "high") == 85 + 170
    # Anthropic: w*h/750 after fitting the long edge to 1568, never above ~1,600.
    assert image_tokens("anthropic", 200, 200) == 54
    assert image_tokens("anthropic", 1092, 1092) == 1590
    assert image_tokens("anthropic", 4000, 3000) == 1600
    # Gemini: 258 up to 384x384, else 258 per 768x768 tile.
    assert image_tokens("gemini", 384, 384) == 258
    assert image_tokens("gemini", 1000, 700) == 2 * 258
    message = chat_pb2.PromptMessage(
        role="user", content="what is this?", images=[chat_pb2.ImagePart(width=1024, height=1024, detail="high")]
    )
    counter = counter_for("openai", "cl100k_base")
    assert counter.message(message) == 3 + counter.text("user") + counter.text("what is this?") + 765


def test_encodings_load_with_no_network_into_a_fresh_cache(tmp_path: Path) -> None:
    script = """
import socket
def no_network(*args, **kwargs):
    raise OSError("network disabled in this test")
socket.socket.connect = no_network
socket.create_connection = no_network
socket.getaddrinfo = no_network
from parley_common.context.tokens import install_offline_encodings
directory = install_offline_encodings()
import tiktoken
print(directory, len(tiktoken.get_encoding("cl100k_base").encode("tiktoken is great!")))
"""
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["TIKTOKEN_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    directory, count = done.stdout.split()
    assert directory == str(tmp_path / "cache") and count == "6"
    # The file has the name tiktoken gives the download: the SHA-1 of its URL.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["9b5ad71b2ce5302211f9c61530b329a4922fc6a4"]
