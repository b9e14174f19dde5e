"""Waiting for provider budget, with the client kept informed.

A request over its model's budget asks again every `poll_s` until it is admitted (it keeps its
place in the shared queue meanwhile, see provider_budgets.py). The client gets a `queued` frame
with its position and the estimated wait:

- when it starts waiting;
- when its position changes, or the estimate strays from the last one shown (counted down) by
  a second and a tenth or more; at most one such frame a second, but at once when it becomes
  the next in line; none when the wait is under two seconds (it starts before a client could
  show it);
- at least every `refresh_s` (10 s) in any case, with the estimate counted down: the client
  sees the wait shrink, and the gateway sees the stream alive (it ends a stream after
  PARLEY_STREAM_IDLE_TIMEOUT_S without a frame), however long the turn legitimately waits.

A cancel while waiting ends the wait at once; after `max_wait_s` the request leaves the queue
and fails with the retryable `provider_budget_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from parley.v1 import chat_pb2
from parley_common.budgets.providers import Admission, BudgetLimits, ProviderBudget, ProviderBudgetSettings
from parley_common.errors import InvalidRequest, Unavailable
from parley_common.messaging.cancellation import Cancellations
from parley_common.messaging.replay import ResponseStream

log = logging.getLogger(__name__)

# A queued frame at least this often (well within the gateway's idle timeout, 60 s by default).
QUEUED_REFRESH_S = 10.0
# Frames for a changed position or estimate come at most this often.
CHANGE_INTERVAL_S = 1.0
# Within this many places of the head, the position is worked out on every ask.
NEAR_HEAD = 10
# A changed position or estimate is not worth a frame when the wait is shorter than this.
SOON_MS = 2000
# A new estimate is worth a frame when it strays this far from the last one shown, counted
# down: at least a second, and at least a tenth of itself.
ESTIMATE_STEP_MS = 1000
ESTIMATE_STEP_RATIO = 0.1


class BudgetQueue:
    def __init__(
        self,
        budget: ProviderBudget,
        cancellations: Cancellations,
        *,
        max_wait_s: float,
        poll_s: float,
        refresh_s: float = QUEUED_REFRESH_S,
    ) -> None:
        self.budget = budget
        self.cancellations = cancellations
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self.refresh_s = refresh_s

    @classmethod
    def from_settings(
        cls, budget: ProviderBudget, cancellations: Cancellations, settings: ProviderBudgetSettings
    ) -> BudgetQueue:
        return cls(budget, cancellations, max_wait_s=settings.budget_max_wait_s, poll_s=settings.budget_poll_s)

    async def admit(
        self,
        stream: ResponseStream,
        *,
        model: str,
        limits: BudgetLimits,
        response_id: str,
        user_id: str,
        tokens: int,
        entry: str | None = None,
        sending: bool = False,
    ) -> bool:
        """Return once `tokens` are reserved (True), or the request was cancelled while waiting (False).

        `entry`: the window entry to reserve (default: the response id); `sending`: the request
        is sent as soon as this returns (see ProviderBudget.acquire's `send_of`).
        Raises InvalidRequest when the request can never fit the budget, Unavailable
        (`provider_budget_timeout`) after the maximum wait.
        """
        if limits.tokens_per_minute is not None and tokens > limits.tokens_per_minute:
            raise InvalidRequest(
                f"the request needs {tokens} tokens, more than {model}'s budget of "
                f"{limits.tokens_per_minute} tokens per minute; ask for a shorter answer",
                code="request_exceeds_provider_budget",
            )
        entry = entry or response_id
        send_of = response_id if sending else None

        async def ask(estimate: bool) -> Admission:
            return await self.budget.acquire(model, limits, entry, user_id, tokens, estimate=estimate, send_of=send_of)

        admission = await ask(True)
        if admission.admitted:
            return True
        deadline = time.monotonic() + self.max_wait_s
        position = admission.position
        shown: Admission | None = None
        shown_at = 0.0
        log.info("waiting for provider budget", extra={"response_id": response_id, "model": model})
        try:
            while not admission.admitted:
                now = time.monotonic()
                if admission.estimated and worth_showing(shown, now - shown_at, admission, self.refresh_s):
                    await stream.emit(
                        queued=chat_pb2.StreamQueued(
                            position=admission.position, estimated_wait_ms=min(admission.wait_ms, 2**32 - 1)
                        )
                    )
                    shown, shown_at = admission, now
                if await self.cancellations.requested(response_id):
                    return False
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"the {model} model is at its provider's rate limit; waited {self.max_wait_s:.0f} s, try again",
                        code="provider_budget_timeout",
                    )
                await asyncio.sleep(self.poll_s)
                # Position and wait are worked out only when a frame may be due (the work grows
                # with the position: near the head it is worked out every time).
                if admission.estimated:
                    position = admission.position
                near = position <= NEAR_HEAD
                admission = await ask(near or time.monotonic() - shown_at >= CHANGE_INTERVAL_S)
        finally:
            if not admission.admitted:
                await asyncio.shield(self.budget.leave(model, entry))
        return True


def worth_showing(shown: Admission | None, elapsed_s: float, now: Admission, refresh_s: float) -> bool:
    """Whether `now` is worth a frame, `elapsed_s` after `shown` was the last one."""
    if shown is None or elapsed_s >= refresh_s:
        return True
    if now.wait_ms < SOON_MS:
        return False  # it starts before a client could show it
    if now.position == 1 and shown.position != 1:
        return True  # next in line: worth saying at once
    if elapsed_s < CHANGE_INTERVAL_S:
        return False
    if shown.position != now.position:
        return True
    projected_ms = max(0.0, shown.wait_ms - elapsed_s * 1000)
    return abs(now.wait_ms - projected_ms) >= max(ESTIMATE_STEP_MS, ESTIMATE_STEP_RATIO * now.wait_ms)


__all__ = ["QUEUED_REFRESH_S", "BudgetQueue", "worth_showing"]
