"""Greedy and hostile clients at the edge: huge or slow headers, slow bodies, streams held
beyond the user's limit, OpenAI-compatible streams abandoned mid-answer, API docs pages.

A stack of its own whose demo model is slow (about 2 tokens/s, so an answer lasts 20-30 s):
a stream stays open as long as a test needs it, with no race against the answer's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from parley_dev.infra import Infra, free_port
from parley_dev.stack import Stack
from tests.support.polling import eventually
from tests.support.sse import frames, read_all
from tests.support.stacks import own_stack, stack_config

DEV_KEY = "pk_test_greedy_" + secrets.token_urlsafe(16)
KEYS = {user: f"pk_test_{user}_" + secrets.token_urlsafe(16) for user in ("dora", "erin", "gus")}
STREAM_LIMIT = 3
HEADER_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
BODY_MIN_BYTES_PER_S = 500
# Nothing in these tests waits this long for what should take a few seconds.
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
async def gstack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    env = {
        "PARLEY_API_KEYS": json.dumps(KEYS),
        "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "50",
        "PARLEY_DEMO_TOKENS_PER_S": "2",
        "PARLEY_HEARTBEAT_S": "1",
        "PARLEY_REQUESTS_PER_MINUTE": "100000",
        "PARLEY_MAX_STREAMS_PER_USER": str(STREAM_LIMIT),
        "PARLEY_HEADER_READ_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "PARLEY_BODY_READ_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "PARLEY_BODY_MIN_BYTES_PER_S": str(BODY_MIN_BYTES_PER_S),
    }
    async with own_stack(stack_config(infra, tmp_path_factory.mktemp("greedy-stack"), "tg", DEV_KEY, env)) as stack:
        yield stack


def api(stack: Stack, user: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {KEYS[user]}"}, timeout=DEADLINE_S
    )


def rss_bytes(stack: Stack) -> int:
    status = Path(f"/proc/{stack.processes['gateway'].pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def send_raw(stack: Stack, head: bytes, *, junk_bytes: int = 0) -> tuple[bytes, int]:
    """Send `head` (then `junk_bytes` more of a header value) on one connection, reading all
    the while; returns what the gateway answered up to its close, and how much was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway_port)
    sent = 0

    async def write() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            sent += len(head)
            chunk = b"a" * 65536
            while sent - len(head) < junk_bytes:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(b"\r\n\r\n")
            await writer.drain()

    writing = asyncio.create_task(write())
    received = b""
    try:
        async with asyncio.timeout(DEADLINE_S * 4):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        writing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writing
        writer.close()
    return received, sent


# 1. Header size


async def test_oversized_headers_are_refused_with_431_before_they_are_read(gstack: Stack) -> None:
    auth = f"Authorization: Bearer {DEV_KEY}\r\n".encode()
    start = b"GET /v1/conversations HTTP/1.1\r\nHost: parley\r\n"
    cases = {
        "one header line of 10 KB": start + auth + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n",
        "40 KB of headers in 1 KB lines": start
        + auth
        + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
        + b"\r\n",
    }
    for name, request in cases.items():
        raw, _ = await send_raw(gstack, request)
        status, headers, body = parse_response(raw)
        assert status == 431, f"{name}: {raw[:200]!r}"
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "headers_too_large", name

    # An Authorization header longer than any API key is refused before it is looked at.
    raw, _ = await send_raw(gstack, start + b"Authorization: Bearer " + b"k" * 3000 + b"\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 431 and json.loads(body)["error"]["code"] == "authorization_too_long", raw[:300]

    # Headers that are merely large (18 KB in short lines) are served.
    ok = start + auth + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 900) for i in range(20)) + b"Connection: close\r\n\r\n"
    raw, _ = await send_raw(gstack, ok)
    assert parse_response(raw)[0] == 200, raw[:300]

    # One 50 MB header before authentication: answered long before it has all arrived, at no
    # cost in memory.
    before = rss_bytes(gstack)
    raw, sent = await send_raw(gstack, start + b"X-Junk: ", junk_bytes=50_000_000)
    status, _, body = parse_response(raw)
    assert status == 431 and json.loads(body)["error"]["code"] == "headers_too_large"
    assert sent < 20_000_000, f"the gateway read {sent} bytes of one header"
    assert rss_bytes(gstack) - before < 20_000_000


# 2. Slow headers and bodies


async def test_requests_whose_headers_or_body_stall_are_closed(gstack: Stack) -> None:
    auth = f"Authorization: Bearer {DEV_KEY}\r\n".encode()
    stalled = {
        "nothing sent": b"",
        "half a request line": b"GET /v1/conver",
        "headers never ended": b"POST /v1/conversations HTTP/1.1\r\nHost: parley\r\n" + auth,
        "body never ended": b"POST /v1/conversations HTTP/1.1\r\nHost: parley\r\n"
        + auth
        + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"title": ',
    }

    async def hold(sent: bytes) -> bytes:
        """What the gateway answered before it closed the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", gstack.gateway_port)
        writer.write(sent)
        await writer.drain()
        received = b""
        try:
            async with asyncio.timeout(DEADLINE_S):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            return b"still open"
        except ConnectionError:
            pass
        finally:
            writer.close()
        return received

    names = [name for name in stalled for _ in range(10)]
    results = await asyncio.gather(*(hold(stalled[name]) for name in names))
    for name, received in zip(names, results, strict=True):
        assert received != b"still open", f"{name}: the gateway held the connection for {DEADLINE_S} s"
        if name == "nothing sent":
            assert received == b"", "an idle connection is closed without an answer"
        else:
            status, _, body = parse_response(received)
            assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout", (name, received)

    # A body that keeps coming faster than the minimum rate is read to its end, however long
    # it takes: here at twice that rate for twice the body timeout.
    body = b'{"title": "slow but steady"' + b" " * (2 * BODY_MIN_BYTES_PER_S * 2 * BODY_TIMEOUT_S) + b"}"
    reader, writer = await asyncio.open_connection("127.0.0.1", gstack.gateway_port)
    writer.write(
        b"POST /v1/conversations HTTP/1.1\r\nHost: parley\r\n"
        + auth
        + b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    step = BODY_MIN_BYTES_PER_S // 5
    for offset in range(0, len(body), step):
        writer.write(body[offset : offset + step])
        await writer.drain()
        await asyncio.sleep(0.1)  # twice the minimum rate
    async with asyncio.timeout(DEADLINE_S):
        raw = await reader.read()
    writer.close()
    status, _, reply = parse_response(raw)
    assert status == 201 and json.loads(reply)["title"] == "slow but steady", raw[:300]


# 3. Every open stream counts against the user's limit


async def open_stream(
    held: contextlib.AsyncExitStack, client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> httpx.Response:
    return await held.enter_async_context(client.stream(method, url, **kwargs))  # type: ignore[arg-type]


async def until_admitted(
    held: contextlib.AsyncExitStack, client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> httpx.Response:
    """Open a stream, trying again while it is refused for too many streams (a slot given back
    a moment ago may not be free yet); fails after DEADLINE_S."""

    async def admitted() -> httpx.Response | None:
        attempt = contextlib.AsyncExitStack()
        response = await open_stream(attempt, client, method, url, **kwargs)
        if response.status_code != 429:
            held.push_async_exit(attempt)
            return response
        await attempt.aclose()
        return None

    return await eventually(admitted, DEADLINE_S, "a free stream slot (streams that ended hold theirs)", 0.2)


async def test_every_open_stream_counts_against_the_users_stream_limit(gstack: Stack) -> None:
    async with api(gstack, "dora") as dora:
        conversations = [(await dora.post("/v1/conversations", json={})).json()["id"] for _ in range(2)]
        async with contextlib.AsyncExitStack() as held:
            turn = await open_stream(
                held, dora, "POST", f"/v1/conversations/{conversations[0]}/messages", json={"content": "a long one"}
            )
            assert turn.status_code == 200
            response_id = turn.headers["x-parley-response-id"]
            events = frames(turn)
            while (await anext(events)).event != "delta":
                pass
            # The answer takes one slot (its own connection comes with it); two resumes take the rest.
            async with contextlib.AsyncExitStack() as resumes:
                for _ in range(STREAM_LIMIT - 1):
                    resumed = await open_stream(resumes, dora, "GET", f"/v1/responses/{response_id}/events")
                    assert resumed.status_code == 200
                refused = await dora.get(f"/v1/responses/{response_id}/events")
                assert refused.status_code == 429, refused.text
                assert refused.json()["error"]["code"] == "too_many_streams" and refused.headers["retry-after"]
                another = await dora.post(f"/v1/conversations/{conversations[1]}/messages", json={"content": "hi"})
                assert another.status_code == 429 and another.json()["error"]["code"] == "too_many_streams"
            # The resumes' clients hung up: their slots are free again while the answer goes on.
            await until_admitted(held, dora, "GET", f"/v1/responses/{response_id}/events")
            assert (await dora.post(f"/v1/responses/{response_id}/cancel")).status_code == 202
            last = [f async for f in events if f.event in ("done", "error")]
            assert last[0].event == "done" and last[0].data["finish_reason"] == "cancelled"

        # Every stream ended (by its last frame or its client hanging up): the whole limit is free.
        async with contextlib.AsyncExitStack() as fresh:
            url = f"/v1/conversations/{conversations[1]}/messages"
            first = await until_admitted(fresh, dora, "POST", url, json={"content": "a new one"})
            assert first.status_code == 200
            new_id = first.headers["x-parley-response-id"]
            for _ in range(STREAM_LIMIT - 1):
                assert (await open_stream(fresh, dora, "GET", f"/v1/responses/{new_id}/events")).status_code == 200
            assert (await dora.post(f"/v1/responses/{new_id}/cancel")).status_code == 202


# 4. OpenAI-compatible streams


async def test_closing_an_openai_compatible_stream_cancels_its_answer(gstack: Stack) -> None:
    async with openai.AsyncOpenAI(base_url=f"{gstack.base_url}/v1", api_key=KEYS["erin"], max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "a long answer please"}], stream=True
        )
        response_id = stream.response.headers["x-parley-response-id"]
        pieces = 0
        async for chunk in stream:
            pieces += bool(chunk.choices and chunk.choices[0].delta.content)
            if pieces == 2:
                break  # the client leaves its loop and closes the stream
        await stream.close()

        async with api(gstack, "erin") as erin, erin.stream("GET", f"/v1/responses/{response_id}/events") as r:
            ended = await read_all(r)
        assert ended[-1].event == "done" and ended[-1].data["finish_reason"] == "cancelled", ended[-1]
        usage = next(f.data for f in ended if f.event == "usage")
        assert usage["output_tokens"] < 15, "billed only for what was generated before the close"

        # Its slot is free again: the user can open their whole limit of streams.
        async def whole_limit() -> bool:
            opened = []
            try:
                for i in range(STREAM_LIMIT):
                    opened.append(
                        await sdk.chat.completions.create(
                            model="demo", messages=[{"role": "user", "content": f"again {i}"}], stream=True
                        )
                    )
                return True
            except openai.RateLimitError:
                return False
            finally:
                for s in opened:
                    await s.close()

        await eventually(whole_limit, DEADLINE_S, "the whole stream limit (the closed stream held its slot)", 0.2)


# 5. API documentation pages


async def test_api_docs_pages_are_off_unless_enabled_and_the_openapi_document_stays(gstack: Stack) -> None:
    async with httpx.AsyncClient(base_url=gstack.base_url, timeout=DEADLINE_S) as anyone:
        for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
            reply = await anyone.get(page)
            assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found", page
        document = await anyone.get("/openapi.json")
        assert document.status_code == 200 and "/v1/conversations" in document.json()["paths"]

    port = free_port()
    gstack.start_service("gateway", port=port, PARLEY_API_DOCS="true")
    try:
        await gstack.wait_ready(gateway_url=f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S) as anyone:
            assert (await anyone.get("/docs")).status_code == 200
            assert (await anyone.get("/redoc")).status_code == 200
    finally:
        gstack.stop_service(f"gateway@{port}")
