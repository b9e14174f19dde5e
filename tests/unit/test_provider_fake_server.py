"""The fake provider server itself: its inspection endpoints, the rules it enforces, and
that it runs as `python -m parley_dev.fake_providers`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from parley_dev.fake_providers import FakeProviderApp, answer_tokens

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}


def openai_body(text: str) -> dict[str, Any]:
    return {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=FakeProviderApp())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield client


def test_answers_are_deterministic_and_can_be_any_length() -> None:
    assert answer_tokens("hello") == answer_tokens("hello") != answer_tokens("hello!")
    assert "".join(answer_tokens("hello")).startswith('Fake answer to "hello":')
    long = answer_tokens("hello", 10_000)
    assert len(long) == 10_000 and not long[0].startswith(" ") and all(t.startswith(" ") for t in long[1:])


async def test_requests_are_recorded_without_secrets_and_can_be_reset(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=openai_body("hi"), headers={"Authorization": "Bearer sk-abc"})
    await client.post("/v1/chat/completions", json=openai_body("hi"))
    seen = (await client.get("/_fake/requests")).json()
    assert [(r["id"], r["format"], r["model"], r["auth"], r["completed"]) for r in seen] == [
        ("req_1", "openai", "m", True, True),
        ("req_2", "openai", "m", False, True),
    ]
    assert "sk-abc" not in json.dumps(seen)
    assert (await client.delete("/_fake/requests")).status_code == 200
    assert (await client.get("/_fake/requests")).json() == []


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", openai_body("[[fake {not json}]]"), {}),
        ("/v1/chat/completions", openai_body('[[fake {"stauts": 500}]]'), {}),
        ("/v1/chat/completions", {"model": "m", "messages": []}, {}),
        ("/v1/messages", {"model": "m", "max_tokens": 9, "stream": True, "messages": []}, {}),
        ("/v1/messages", {"model": "m", "stream": True, "messages": []}, ANTHROPIC_HEADERS),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": 9, "stream": True, "messages": [{"role": "system", "content": "x"}]},
            ANTHROPIC_HEADERS,
        ),
        ("/v1beta/models/g:streamGenerateContent?alt=sse", {"contents": []}, {}),
        ("/v1beta/models/g:streamGenerateContent", {"contents": [{"parts": [{"text": "x"}]}]}, {}),
    ],
)
async def test_requests_breaking_the_providers_rules_get_a_400_in_their_format(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["message"]


async def test_unknown_paths_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models")).status_code == 404


async def test_the_directive_is_not_part_of_the_answer(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=openai_body('hi [[fake {"tokens_per_s": 1000}]]'))
    text = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in response.text.splitlines()
        if line.startswith("data: {")
    )
    assert text == "".join(answer_tokens("hi"))


async def test_echo_answers_with_the_message_verbatim(client: httpx.AsyncClient) -> None:
    message = "# Title\n\n```py\nprint('<b>')\n```\n\n- one\n-  two"
    response = await client.post("/v1/chat/completions", json=openai_body(f'{message}\n[[fake {{"echo": true}}]]'))
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(deltas) == message
    assert len([d for d in deltas if d]) == 9, "one event per word, as with any answer"


async def test_it_runs_as_a_module_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "parley_dev.fake_providers",
        "--port",
        "0",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        ready = json.loads(line)
        assert ready["msg"].startswith("fake providers ready")
        async with httpx.AsyncClient(base_url=ready["url"]) as client:
            response = await client.post("/v1/chat/completions", json=openai_body("hi"))
            assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
