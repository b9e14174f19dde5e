"""RetryPolicy: how long the worker waits before asking a provider again, when it stops, and
which failures move the turn to the next model of its fallback chain."""

from __future__ import annotations

import random

import pytest

from parley_worker.providers.errors import (
    AuthenticationFailed,
    BadRequest,
    BadResponse,
    ConnectionFailed,
    ContextLengthExceeded,
    Overloaded,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ServerError,
)
from parley_worker.resilience import RetryPolicy

POLICY = RetryPolicy(max_retries=10, base_s=0.5, max_backoff_s=8.0, max_retry_after_s=20.0)


def waits(policy: RetryPolicy, retry: int, error: ProviderError, samples: int = 300) -> list[float]:
    rng = random.Random(retry)
    out = []
    for _ in range(samples):
        wait = policy.backoff_s(retry, error, rng)
        assert wait is not None
        out.append(wait)
    return out


@pytest.mark.parametrize(("retry", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)])
def test_the_wait_doubles_with_each_retry_and_is_jittered_between_half_and_all_of_it(
    retry: int, ceiling: float
) -> None:
    seen = waits(POLICY, retry, ServerError("boom"))
    assert all(ceiling / 2 <= wait <= ceiling for wait in seen), "equal jitter: never below half the ceiling"
    # Jittered, not fixed: the waits spread over the range (so clients do not retry in step).
    assert max(seen) - min(seen) > ceiling / 4
    assert min(seen) < ceiling * 0.6 and max(seen) > ceiling * 0.9


@pytest.mark.parametrize("retry", [6, 7, 10])
def test_the_wait_never_exceeds_max_backoff(retry: int) -> None:
    seen = waits(POLICY, retry, ConnectionFailed("dropped"))
    assert all(4.0 <= wait <= 8.0 for wait in seen)
    assert max(seen) > 7.0


def test_a_retry_after_is_waited_for_exactly_even_above_max_backoff() -> None:
    # The provider said how long: no jitter, no backoff cap (8 s) in the way.
    assert POLICY.backoff_s(1, ProviderRateLimited("slow down", retry_after_s=3.0)) == 3.0
    assert POLICY.backoff_s(3, Overloaded("busy", retry_after_s=12.5)) == 12.5
    assert POLICY.backoff_s(1, ProviderRateLimited("now", retry_after_s=0.0)) == 0.0
    assert POLICY.backoff_s(1, ProviderRateLimited("at the limit", retry_after_s=20.0)) == 20.0


def test_a_retry_after_above_the_maximum_is_not_waited_for() -> None:
    assert POLICY.backoff_s(1, ProviderRateLimited("come back in a minute", retry_after_s=60.0)) is None
    assert POLICY.backoff_s(1, Overloaded("busy", retry_after_s=20.5)) is None


def test_retries_stop_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    error = ServerError("boom")
    assert policy.backoff_s(1, error) is not None
    assert policy.backoff_s(2, error) is not None
    assert policy.backoff_s(3, error) is None
    assert RetryPolicy(max_retries=0).backoff_s(1, error) is None


@pytest.mark.parametrize(
    "error",
    [
        ContextLengthExceeded("too long"),
        BadRequest("no"),
        AuthenticationFailed("bad key"),
    ],
)
def test_a_refused_request_is_never_retried_and_never_falls_back(error: ProviderError) -> None:
    assert POLICY.backoff_s(1, error) is None
    assert not RetryPolicy.falls_back(error)


@pytest.mark.parametrize(
    "error",
    [
        Overloaded("busy"),
        ServerError("boom", status=502),
        BadResponse("garbled"),
        ProviderTimeout("slow", phase="first_token"),
        ConnectionFailed("refused"),
    ],
)
def test_provider_trouble_is_retried_then_falls_back(error: ProviderError) -> None:
    assert POLICY.backoff_s(1, error) is not None
    assert error.fallback_worthy and RetryPolicy.falls_back(error)


def test_a_rate_limit_is_retried_and_falls_back_once_its_retries_are_spent() -> None:
    # Deliberate (providers/errors.py): a limit is ours, not the provider in trouble, so it is
    # not `fallback_worthy`; but the next model has a limit of its own, so a rate limit that
    # outlasts the retries (or asks for too long a wait) moves the turn rather than failing it.
    limited = ProviderRateLimited("slow down", retry_after_s=2.0)
    assert not limited.fallback_worthy
    assert POLICY.backoff_s(1, limited) == 2.0
    assert RetryPolicy(max_retries=1).backoff_s(2, limited) is None
    assert RetryPolicy.falls_back(limited)
