from __future__ import annotations

from datetime import UTC, datetime

import pytest

from parley_worker.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    ConnectionFailed,
    ContextLengthExceeded,
    ErrorDetail,
    Overloaded,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ServerError,
    error_for,
    error_from_status,
    kind_for_status,
    parse_duration,
    parse_retry_after,
    redact,
)

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, "rate_limited"),
        (529, "overloaded"),
        (503, "overloaded"),
        (500, "server_error"),
        (502, "server_error"),
        (504, "server_error"),
        (520, "server_error"),
        (400, "bad_request"),
        (404, "bad_request"),
        (413, "bad_request"),
        (401, "auth"),
        (403, "auth"),
        (408, "timeout"),
    ],
)
def test_status_maps_to_kind(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


def test_a_400_is_a_context_error_only_when_the_body_says_so() -> None:
    assert kind_for_status(400, context_length_exceeded=True) == "context_length_exceeded"
    assert kind_for_status(500, context_length_exceeded=True) == "server_error"


@pytest.mark.parametrize(
    ("error", "retryable", "fallback_worthy"),
    [
        (ProviderRateLimited("x"), True, False),
        (Overloaded("x"), True, True),
        (ServerError("x"), True, True),
        (ContextLengthExceeded("x"), False, False),
        (BadRequest("x"), False, False),
        (AuthenticationFailed("x"), False, False),
        (ProviderTimeout("x", phase="idle"), True, True),
        (ConnectionFailed("x"), True, True),
    ],
)
def test_retryable_and_fallback_worthy(error: ProviderError, retryable: bool, fallback_worthy: bool) -> None:
    assert (error.retryable, error.fallback_worthy) == (retryable, fallback_worthy)


def test_each_kind_has_one_class_whose_attributes_say_what_to_do() -> None:
    kinds = ["rate_limited", "overloaded", "server_error", "bad_response", "context_length_exceeded",
             "bad_request", "auth", "timeout", "connection"]  # fmt: skip
    errors = [error_for(kind, "x") for kind in kinds]  # type: ignore[arg-type]
    assert [e.kind for e in errors] == kinds
    assert len({type(e) for e in errors}) == len(kinds)
    # Every kind tells the client something different, always a provider's code or the context one.
    codes = [e.client_code for e in errors]
    assert len(set(codes)) == len(codes)
    assert all(c.startswith("provider_") or c == "context_length_exceeded" for c in codes)
    assert isinstance(error_for("overloaded", "x"), Overloaded)
    assert isinstance(error_for("context_length_exceeded", "x"), ContextLengthExceeded)


def test_error_from_status_prefers_the_header_wait_and_keeps_the_body_kind() -> None:
    error = error_from_status(
        429, ErrorDetail("slow down", retry_after_s=9.0), headers={"Retry-After": "3"}, provider="openai", now=NOW
    )
    assert isinstance(error, ProviderRateLimited)
    assert (error.status, error.retry_after_s, error.provider) == (429, 3.0, "openai")
    assert str(error) == "openai: HTTP 429: slow down"
    from_body = error_from_status(429, ErrorDetail("x", retry_after_s=9.0), headers={}, provider="gemini")
    assert from_body.retry_after_s == 9.0
    context = error_from_status(400, ErrorDetail("too long", kind="context_length_exceeded"), headers={}, provider="p")
    assert isinstance(context, ContextLengthExceeded)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "7"}, 0.25),
        ({"retry-after": "Fri, 27 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"retry-after": "Fri, 27 Nov 2026 11:00:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-5"}, None),
        # Anthropic: only the limit that is used up counts.
        (
            {
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": "2026-11-27T12:00:20Z",
                "anthropic-ratelimit-tokens-remaining": "5000",
                "anthropic-ratelimit-tokens-reset": "2026-11-27T12:05:00Z",
            },
            20.0,
        ),
        # OpenAI: durations.
        (
            {
                "x-ratelimit-remaining-requests": "10",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": "6m0s",
            },
            360.0,
        ),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "nonsense"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("22s", 22.0), ("6m0s", 360.0), ("1h2m3s", 3723.0), ("20ms", 0.02), ("1.5s", 1.5), ("", None), ("5 s", None)],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_redact_removes_the_key_and_bounds_the_length() -> None:
    assert redact("bad key sk-secret-123 given", "sk-secret-123") == "bad key [redacted] given"
    assert len(redact("x" * 5000, None)) == 500
