"""Waiting for provider budget, with the client kept informed.

A request over its model's budget asks again every `poll_s` until it is admitted (it keeps
its place in the shared queue meanwhile, see budgets.py). The client gets a `queued` frame
when it starts waiting and again whenever its position changes or the estimate strays from
the last one shown (counted down) by two seconds or more. A cancel while waiting ends the
wait at once; after `max_wait_s` the request leaves the queue and fails with the retryable
`provider_budget_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.v1 import chat_pb2
from parley_common.control import Cancellations
from parley_common.errors import InvalidRequest, Unavailable
from parley_common.replay import ResponseStream

from .budgets import Admission, BudgetLimits, ProviderBudget

log = logging.getLogger(__name__)

# A new estimate is worth a frame when it strays this far from the last one shown, counted down.
ESTIMATE_STEP_MS = 2000


class BudgetQueue:
    def __init__(
        self, budget: ProviderBudget, cancellations: Cancellations, *, max_wait_s: float, poll_s: float
    ) -> None:
        self.budget = budget
        self.cancellations = cancellations
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s

    async def admit(
        self,
        stream: ResponseStream,
        *,
        model: str,
        limits: BudgetLimits,
        response_id: str,
        user_id: str,
        tokens: int,
    ) -> bool:
        """Return once `tokens` are reserved (True), or the request was cancelled while waiting (False).

        Raises InvalidRequest when the request can never fit the budget, Unavailable
        (`provider_budget_timeout`) after the maximum wait.
        """
        if limits.tokens_per_minute is not None and tokens > limits.tokens_per_minute:
            raise InvalidRequest(
                f"the request needs {tokens} tokens, more than {model}'s budget of "
                f"{limits.tokens_per_minute} tokens per minute; ask for a shorter answer",
                code="request_exceeds_provider_budget",
            )
        admission = await self.budget.acquire(model, limits, response_id, user_id, tokens)
        if admission.admitted:
            return True
        deadline = time.monotonic() + self.max_wait_s
        shown: Admission | None = None
        shown_at = 0.0
        log.info("waiting for provider budget", extra={"response_id": response_id, "model": model})
        try:
            while not admission.admitted:
                if shown is None or _worth_showing(shown, time.monotonic() - shown_at, admission):
                    await stream.emit(
                        queued=chat_pb2.StreamQueued(
                            position=admission.position, estimated_wait_ms=min(admission.wait_ms, 2**32 - 1)
                        )
                    )
                    shown, shown_at = admission, time.monotonic()
                if await self.cancellations.requested(response_id):
                    return False
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"the {model} model is at its provider's rate limit; waited {self.max_wait_s:.0f} s, try again",
                        code="provider_budget_timeout",
                    )
                await asyncio.sleep(self.poll_s)
                admission = await self.budget.acquire(model, limits, response_id, user_id, tokens)
        finally:
            if not admission.admitted:
                await asyncio.shield(self.budget.leave(model, response_id))
        return True


def _worth_showing(shown: Admission, elapsed_s: float, now: Admission) -> bool:
    projected_ms = max(0.0, shown.wait_ms - elapsed_s * 1000)
    return shown.position != now.position or abs(now.wait_ms - projected_ms) >= ESTIMATE_STEP_MS


__all__ = ["BudgetQueue"]
