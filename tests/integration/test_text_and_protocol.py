"""Hostile text and protocol edges, as a client meets them: text that is not valid Unicode,
cursors and Last-Event-IDs that are not frame or page numbers, resuming a finished answer, and
the usage of a cancelled one."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import pytest

from parley_common.context.tokens import counter_for
from parley_history.store import encode_cursor
from tests.support.api import assert_error, stored_messages
from tests.support.sse import frames, read_all, text_of

JSON = {"content-type": "application/json"}
# A lone surrogate: valid JSON, but no UTF-8 text (nor a protobuf string) can carry it.
SURROGATE = b"hello \\ud800"
# What a gRPC or Python error would say if it reached a client.
INTERNAL_WORDS = ("Unexpected", "<class", "Traceback", "Exception", "Error:", "int64", "digits")


def assert_clean(reply: httpx.Response) -> None:
    for word in INTERNAL_WORDS:
        assert word not in reply.text, reply.text


async def test_a_lone_surrogate_in_a_message_is_a_400_and_its_message_id_can_be_sent_again(
    client: httpx.AsyncClient, conversation: str
) -> None:
    message_id = "m_surrogate_" + secrets.token_hex(6)
    url = f"/v1/conversations/{conversation}/messages"
    body = b'{"content": "' + SURROGATE + b'", "client_message_id": "' + message_id.encode() + b'"}'
    refused = await client.post(url, content=body, headers=JSON)
    assert_error(refused, 400, "invalid_unicode")
    assert_clean(refused)
    # Nothing of the refused request is left behind: the same message id, now valid, is answered.
    started = time.monotonic()
    async with asyncio.timeout(20):
        async with client.stream("POST", url, json={"content": "hello", "client_message_id": message_id}) as r:
            assert r.status_code == 200
            got = await read_all(r)
    assert got[-1].event == "done", got[-1]
    assert text_of(got).startswith('You said: "hello".')
    assert time.monotonic() - started < 15
    stored = await stored_messages(client, conversation, 2)
    assert stored[-1]["role"] == "user" and stored[-1]["content"] == "hello"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", b'{"model": "demo", "messages": [{"role": "user", "content": "S"}]}'),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "demo", "stream": true, "messages": [{"role": "user", '
            b'"content": [{"type": "text", "text": "S"}]}]}',
        ),
        ("POST", "/v1/tokens/count", b'{"content": "S"}'),
        ("POST", "/v1/tokens/count", b'{"content": "hi", "conversation_id": "S"}'),
        ("POST", "/v1/conversations", b'{"title": "S"}'),
        ("PATCH", "/v1/conversations/{cid}", b'{"title": "S"}'),
        ("POST", "/v1/conversations/{cid}/messages", b'{"content": "hi", "model": "S"}'),
        ("POST", "/v1/images/generations", b'{"prompt": "S"}'),
        ("POST", "/v1/media/uploads", b'{"content_type": "image/png", "size_bytes": 10, "filename": "S"}'),
        # A field named with one.
        ("POST", "/v1/conversations/{cid}/messages", b'{"content": "hi", "S": 1}'),
    ],
)
async def test_a_lone_surrogate_anywhere_is_a_400_never_a_500(
    client: httpx.AsyncClient, conversation: str, method: str, path: str, body: bytes
) -> None:
    reply = await client.request(
        method, path.format(cid=conversation), content=body.replace(b"S", SURROGATE), headers=JSON
    )
    assert_error(reply, 400, "invalid_unicode")
    assert_clean(reply)


# Numbers no page position can be: past int64, non-ASCII digits (str.isdigit() says yes to
# them), and a long run of digits.
BAD_NUMBERS = [str(2**63), "9" * 150, "\u00b2", "\u0663\u0661", "\uff11"]


@pytest.mark.parametrize("number", BAD_NUMBERS)
async def test_cursors_that_are_not_positions_are_a_400_invalid_cursor(
    client: httpx.AsyncClient, conversation: str, number: str
) -> None:
    for path, params in [
        ("/v1/conversations", {"cursor": encode_cursor(number, "c_x")}),
        (f"/v1/conversations/{conversation}/messages", {"before": encode_cursor(number, "m_x")}),
        ("/v1/sync", {"since": encode_cursor(number)}),
    ]:
        reply = await client.get(path, params=params)
        assert_error(reply, 400, "invalid_cursor")
        assert_clean(reply)


@pytest.mark.parametrize("last_event_id", [b"\xb2", b"\xd9\xa3", b"9" * 20, str(2**63).encode(), b"-1", b"1e3"])
async def test_a_last_event_id_that_is_not_a_frame_number_is_a_400_at_once(
    client: httpx.AsyncClient, conversation: str, last_event_id: bytes
) -> None:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "hi"}) as r:
        response_id = r.headers["x-parley-response-id"]
        await read_all(r)
    started = time.monotonic()
    reply = await client.get(f"/v1/responses/{response_id}/events", headers={"Last-Event-ID": last_event_id})
    assert_error(reply, 400, "invalid_last_event_id")
    assert_clean(reply)
    assert time.monotonic() - started < 2


async def test_resuming_after_the_done_frame_ends_at_once_without_inviting_a_retry(
    client: httpx.AsyncClient, conversation: str
) -> None:
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": "over"}) as r:
        response_id = r.headers["x-parley-response-id"]
        got = await read_all(r)
    done = got[-1]
    assert done.event == "done" and done.id is not None
    url = f"/v1/responses/{response_id}/events"
    # What a browser's EventSource sends when the connection closes after the last frame; a
    # Last-Event-ID past the end is no different. 204 is what tells an EventSource to stop.
    for last in (done.id, done.id + 7):
        started = time.monotonic()
        reply = await client.get(url, headers={"Last-Event-ID": str(last)})
        assert reply.status_code == 204, reply.text
        assert reply.content == b""
        assert time.monotonic() - started < 2
    # One frame before the end: exactly the last frame.
    async with client.stream("GET", url, headers={"Last-Event-ID": str(done.id - 1)}) as r:
        assert r.status_code == 200
        rest = await read_all(r)
    assert [(f.event, f.id) for f in rest] == [("done", done.id)]


async def test_a_cancelled_answer_reports_the_tokens_it_used(client: httpx.AsyncClient, conversation: str) -> None:
    content = "stop me and count"
    # The same prompt in another conversation, counted before sending.
    counted = (await client.post("/v1/tokens/count", json={"content": content})).json()
    seen = []
    async with client.stream("POST", f"/v1/conversations/{conversation}/messages", json={"content": content}) as r:
        response_id = r.headers["x-parley-response-id"]
        async for frame in frames(r):
            seen.append(frame)
            if frame.event == "delta" and sum(f.event == "delta" for f in seen) == 3:
                assert (await client.post(f"/v1/responses/{response_id}/cancel")).status_code == 202
            if frame.event in ("done", "error"):
                break
    assert seen[-1].event == "done" and seen[-1].data["finish_reason"] == "cancelled"
    shown = text_of(seen)
    usage: dict[str, Any] = next(f.data for f in seen if f.event == "usage")
    assert usage["input_tokens"] == counted["input_tokens"] > 0
    assert usage["output_tokens"] == counter_for("demo", "cl100k_base").text(shown) > 0
    stored = await stored_messages(client, conversation, 2)
    assert stored[0]["id"] == response_id and stored[0]["status"] == "interrupted"
    assert stored[0]["usage"] == {k: usage[k] for k in ("input_tokens", "output_tokens", "cost_micros")}
