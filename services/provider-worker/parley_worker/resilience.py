"""When to retry a provider, how long to wait, and when to fall back to the next model.

Only before the first token reached the client: text the user has seen is never repeated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .providers.errors import ProviderError


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_s: float = 0.5
    max_backoff_s: float = 8.0
    # A retry-after longer than this is not waited for: fall back (or fail) instead.
    max_retry_after_s: float = 20.0

    def backoff_s(self, retry: int, error: ProviderError, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (1-based), or None to stop retrying."""
        if not error.retryable or retry > self.max_retries:
            return None
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            return error.retry_after_s
        # Exponential backoff with "equal jitter": a random wait between half the ceiling and
        # the ceiling, so retries spread out but never come back at once.
        ceiling = min(self.max_backoff_s, self.base_s * 2 ** (retry - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)

    @staticmethod
    def falls_back(error: ProviderError) -> bool:
        """Whether a failure that outlasted its retries moves to the next model of the chain.

        Provider trouble (`fallback_worthy`: overload, 5xx, unreadable answers, timeouts,
        dropped connections) does, and so does a rate limit: the next model has a limit of
        its own, and answering there beats failing the turn (see providers/errors.py).
        A request the provider refused (bad request, credentials, too long) does not.
        """
        return error.fallback_worthy or error.kind == "rate_limited"
