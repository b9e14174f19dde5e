"""The orchestrator's side of the budgets.

Provider budgets (parley_common.budgets.providers) are shared with the provider workers, which
count every request they send: here a turn takes its first reservation before its job is
published, and when the turn ends (or moves to a fallback model) its entry keeps its place if
the provider got the request, and goes back if it never did.

The user's monthly budget (parley_common.budgets.users): the gateway held an estimate of the
turn's worst case when it admitted it; once the prompt is assembled and counted, the hold
becomes the exact worst case on the model that answers (`hold_worst_case`), and the turn's
completion replaces it by what was used. A new turn's hold also reads its cancellation flag and
writes its job record, in one round trip (`hold_worst_case_unless_cancelled`).
"""

from __future__ import annotations

from parley_common.budgets.users import ResponseRecord, UserBudgets
from parley_common.context.window import ContextPlan
from parley_common.messaging.cancellation import Cancellations


def worst_case(plan: ContextPlan) -> tuple[int, int]:
    """(tokens, cost in micro-dollars) the turn may use at most: its prompt and its longest answer."""
    return plan.reserved_tokens(), plan.spec.cost_micros(plan.fit.input_tokens, plan.max_output_tokens)


async def hold_worst_case(budgets: UserBudgets | None, user_id: str, response_id: str, plan: ContextPlan) -> None:
    """Hold the turn's exact worst case in the user's monthly budget, in place of what was held
    for it so far; raises RateLimited (`user_budget_exceeded`) when it does not fit."""
    if budgets is None:
        return
    tokens, cost = worst_case(plan)
    await budgets.hold(user_id, response_id, tokens, cost)


async def hold_worst_case_unless_cancelled(
    budgets: UserBudgets | None,
    cancellations: Cancellations,
    user_id: str,
    response_id: str,
    plan: ContextPlan,
    record: ResponseRecord | None = None,
) -> tuple[bool, bool]:
    """hold_worst_case, with the turn's cancellation flag read and `record` written in the same
    Redis round trip. Returns (cancelled, record written). A cancelled turn is refused nothing:
    it ends as cancelled, and its completion settles whatever this step held and wrote."""
    if budgets is None:
        # No ledger: only the flag is read (the caller writes the record itself).
        return await cancellations.requested(response_id) is not None, False
    tokens, cost = worst_case(plan)
    flag = await budgets.hold_unless(cancellations.key(response_id), user_id, response_id, tokens, cost, record=record)
    return flag is not None, record is not None
