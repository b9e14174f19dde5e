"""Waiting for provider budget: the queue the orchestrator and the provider workers share
(parley_common.budget_queue)."""

from __future__ import annotations

from parley_common.budget_queue import BudgetQueue

__all__ = ["BudgetQueue"]
