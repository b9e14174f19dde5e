"""Waiting for provider budget: the queue the orchestrator and the provider workers share
(parley_common.budgets.waiting)."""

from __future__ import annotations

from parley_common.budgets.waiting import BudgetQueue

__all__ = ["BudgetQueue"]
