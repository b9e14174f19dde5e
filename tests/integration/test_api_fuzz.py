"""Schemathesis against the gateway's own OpenAPI: whatever it is sent, valid or not, the
gateway answers without a 5xx and without a stack trace."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from parley_dev.infra import free_port
from parley_dev.stack import Stack
from parley_history.store import encode_cursor

FUZZ_KEY = "pk_test_fuzz_" + secrets.token_urlsafe(16)
# `make test` explores the same inputs every run (derandomized), so CI judges the code, not luck;
# PARLEY_FUZZ_EXAMPLES=200 PARLEY_FUZZ_RANDOM=1 explores new ones (how the uint64 bug was found).
EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "10"))
DERANDOMIZE = os.environ.get("PARLEY_FUZZ_RANDOM", "") != "1"


# Text schemathesis does not draw deterministically, sent to every operation that takes text:
# a lone surrogate (valid JSON, no UTF-8 text), the characters line-splitting readers take for
# line ends, cursors whose numbers are past int64, long or not ASCII digits, and Last-Event-IDs
# that are not frame numbers.
SURROGATE = "hello \ud800"
LINE_BREAKERS = "one\u2028two\u2029three\x85four"
BAD_NUMBERS = [str(2**63), "9" * 150, "\u00b2", "\u0663\u0661"]
NO_CONVERSATION = {"conversation_id": "c_fuzz_nothing_here"}
LEAKS = ("Traceback", "Unexpected <class")
TEXT_EXAMPLES: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("POST", "/v1/conversations"): [{"body": {"title": SURROGATE}}, {"body": {"title": LINE_BREAKERS}}],
    ("PATCH", "/v1/conversations/{conversation_id}"): [
        {"path_parameters": NO_CONVERSATION, "body": {"title": SURROGATE}}
    ],
    ("GET", "/v1/conversations"): [{"query": {"cursor": encode_cursor(n, "c_x")}} for n in BAD_NUMBERS],
    ("GET", "/v1/conversations/{conversation_id}/messages"): [
        {"path_parameters": NO_CONVERSATION, "query": {"before": encode_cursor(n, "m_x")}} for n in BAD_NUMBERS
    ],
    ("POST", "/v1/conversations/{conversation_id}/messages"): [
        {"path_parameters": NO_CONVERSATION, "body": {"content": SURROGATE, "client_message_id": "m_fuzz"}},
        {"path_parameters": NO_CONVERSATION, "body": {"content": "hi", "model": SURROGATE}},
    ],
    ("GET", "/v1/sync"): [{"query": {"since": encode_cursor(n)}} for n in BAD_NUMBERS],
    ("GET", "/v1/conversations/search"): [{"query": {"q": LINE_BREAKERS}}, {"query": {"q": " ß" * 150}}],
    ("GET", "/v1/responses/{response_id}/events"): [
        {"path_parameters": {"response_id": "r_fuzz"}, "headers": {"Last-Event-ID": value}}
        for value in ("\xb2", "9" * 20, str(2**63))
    ],
    ("POST", "/v1/chat/completions"): [
        {"body": {"model": "demo", "messages": [{"role": "user", "content": SURROGATE}]}},
        {"body": {"model": "demo", "messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]}},
        {"body": {"model": "demo", "stream": True, "messages": [{"role": "user", "content": LINE_BREAKERS}]}},
    ],
    ("POST", "/v1/tokens/count"): [{"body": {"content": SURROGATE}}, {"body": {"content": LINE_BREAKERS}}],
    ("POST", "/v1/images/generations"): [{"body": {"prompt": SURROGATE}}],
    ("POST", "/v1/media/uploads"): [{"body": {"content_type": "image/png", "filename": SURROGATE}}],
}


@pytest.fixture(scope="module")
async def fuzz_gateway(stack: Stack) -> AsyncIterator[str]:
    """A gateway of its own, with a user of its own, so the fuzzer's request rate limits nobody else."""
    port = free_port()
    stack.start_service(
        "gateway",
        port=port,
        PARLEY_API_KEYS=json.dumps({"fuzzer": FUZZ_KEY}),
        PARLEY_REQUESTS_PER_MINUTE="100000",
        PARLEY_MAX_STREAMS_PER_USER="1000",
        PARLEY_STREAM_IDLE_TIMEOUT_S="5",
    )
    url = f"http://127.0.0.1:{port}"
    await stack.wait_ready(gateway_url=url)
    yield url
    stack.stop_service(f"gateway@{port}")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_the_gateway_fail(fuzz_gateway: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_gateway}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, "the OpenAPI document lists the API"
    listed = {(operation.method.upper(), operation.path) for operation in operations}
    assert set(TEXT_EXAMPLES) <= listed, f"examples for operations the API does not have: {set(TEXT_EXAMPLES) - listed}"
    for operation in operations:
        explicit = TEXT_EXAMPLES.get((operation.method.upper(), operation.path), [])
        if mode is not GenerationMode.POSITIVE:
            explicit = []  # once is enough

        def with_examples(test: Any, explicit: list[dict[str, Any]] = explicit, operation: Any = operation) -> Any:
            for fields in explicit:
                test = example(case=operation.Case(**fields))(test)
            return test

        @with_examples
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=DERANDOMIZE,
        )
        def check(case: schemathesis.Case) -> None:
            for headers in ({"Authorization": f"Bearer {FUZZ_KEY}"}, {}):
                response = case.call(base_url=fuzz_gateway, headers=headers, timeout=30)
                # A trace, or a server's exception text passed on by gRPC ("Unexpected <class …>").
                if response.status_code >= 500 or any(leak in response.text for leak in LEAKS):
                    failures.append(
                        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                    )

        try:
            check()
        except Unsatisfiable:
            # Nothing to negate (an operation without parameters or body): positive mode covers it.
            assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:20])
