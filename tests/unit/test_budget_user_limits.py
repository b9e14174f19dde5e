"""Monthly user limits and the budget queue's frames: the arithmetic (the Redis ledgers are
exercised in tests/integration)."""

from __future__ import annotations

import datetime as dt

import pytest

from parley.v1 import chat_pb2
from parley_common.budgets.providers import Admission
from parley_common.budgets.users import BudgetStatus, MonthlySpend, PlanLimits, month_of
from parley_common.budgets.waiting import worth_showing
from parley_common.models import ModelConfig
from parley_orchestrator.response_cache import cache_key, is_deterministic


def ts(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()  # type: ignore[misc]


def test_months_are_utc_calendar_months_and_reset_on_the_first() -> None:
    assert month_of(ts(2026, 11, 27, 3, 0)) == ("2026-11", int(ts(2026, 12, 1)))
    assert month_of(ts(2026, 12, 31, 23, 59, 59)) == ("2026-12", int(ts(2027, 1, 1)))
    assert month_of(ts(2027, 1, 1)) == ("2027-01", int(ts(2027, 2, 1)))


def status(tokens: int, cost: int, limits: PlanLimits) -> BudgetStatus:
    return BudgetStatus(plan="free", limits=limits, spent=MonthlySpend(tokens, cost), reset_at=1_800_000_000)


def test_a_limit_is_exhausted_once_it_is_reached_not_before() -> None:
    limits = PlanLimits(monthly_tokens=1000, monthly_cost_micros=500)
    assert status(999, 499, limits).exhausted() is None
    assert status(1000, 0, limits).exhausted() == "tokens"
    assert status(1500, 0, limits).tokens_remaining == 0, "an overshoot shows as nothing left"
    assert status(0, 500, limits).exhausted() == "cost"
    assert status(10**12, 10**12, PlanLimits()).exhausted() is None, "no limit set: never exhausted"


def test_what_running_turns_hold_counts_as_spent_until_they_end() -> None:
    limits = PlanLimits(monthly_tokens=1000, monthly_cost_micros=500)
    busy = BudgetStatus("free", limits, MonthlySpend(400, 100), 1_800_000_000, held=MonthlySpend(500, 300))
    assert (busy.tokens_remaining, busy.cost_remaining_micros) == (100, 100)
    assert busy.shortfall(100, 100) is None, "exactly what is left fits"
    tokens = busy.shortfall(101, 0)
    assert tokens is not None
    assert "up to 101 tokens" in tokens and "the 100 left" in tokens and "other answers" in tokens
    cost = busy.shortfall(0, 101)
    assert cost is not None and "101 micro-dollars" in cost and "cost limit" in cost
    spent = BudgetStatus("free", limits, MonthlySpend(1000, 0), 1_800_000_000)
    assert spent.shortfall(0, 0) == "the monthly tokens limit of your plan 'free' is used up"
    assert BudgetStatus("free", PlanLimits(), MonthlySpend(10**9, 10**9), 0).shortfall(10**9, 10**9) is None


def test_a_queued_frame_goes_out_when_it_tells_something_new_or_to_show_the_wait_counting_down() -> None:
    shown = Admission(False, position=3, wait_ms=30_000)
    assert worth_showing(None, 0.0, shown, 10.0), "the first one"
    assert not worth_showing(shown, 0.5, Admission(False, 2, 20_000), 10.0), "at most one change a second"
    assert worth_showing(shown, 0.5, Admission(False, 1, 10_000), 10.0), "but next in line at once"
    assert worth_showing(shown, 1.5, Admission(False, 2, 28_500), 10.0), "a new position"
    counted_down = Admission(False, 3, 27_000)
    assert not worth_showing(shown, 3.0, counted_down, 10.0), "the wait counts down as shown: nothing new"
    assert worth_showing(shown, 3.0, Admission(False, 3, 33_000), 10.0), "an estimate 6 s later than shown"
    assert not worth_showing(shown, 3.0, Admission(False, 3, 29_000), 10.0), "2 s off a 29 s wait: under a tenth"
    assert worth_showing(shown, 10.0, Admission(False, 3, 20_000), 10.0), "the countdown, every refresh"
    assert not worth_showing(shown, 1.5, Admission(False, 1, 1_500), 10.0), "not for a start within 2 s"
    assert worth_showing(shown, 10.0, Admission(False, 1, 1_500), 10.0), "unless the refresh is due"


def test_plan_limits_reject_negative_values() -> None:
    with pytest.raises(ValueError):
        PlanLimits(monthly_tokens=-1)


def model(**options: object) -> ModelConfig:
    return ModelConfig(
        provider="p",
        upstream_model="m",
        context_window=8192,
        max_output_tokens=100,
        input_price_per_mtok=0,
        output_price_per_mtok=0,
        **options,  # type: ignore[arg-type]
    )


def test_only_temperature_zero_is_deterministic() -> None:
    assert is_deterministic(chat_pb2.ChatRequest(temperature=0.0, has_temperature=True), model())
    assert not is_deterministic(chat_pb2.ChatRequest(temperature=0.0, has_temperature=False), model())
    assert not is_deterministic(chat_pb2.ChatRequest(temperature=0.2, has_temperature=True), model())


def test_determinism_is_decided_by_the_temperature_the_model_gets() -> None:
    # A model that refuses the field samples at its own default whatever the user asked: its
    # answers are never stored as deterministic. A registry default of 0 makes a request that
    # sets nothing deterministic; the user's own temperature outranks the default.
    refuses = model(accepts_temperature=False)
    assert not is_deterministic(chat_pb2.ChatRequest(temperature=0.0, has_temperature=True), refuses)
    greedy = model(temperature=0.0)
    assert is_deterministic(chat_pb2.ChatRequest(), greedy)
    assert not is_deterministic(chat_pb2.ChatRequest(temperature=0.7, has_temperature=True), greedy)
    assert not is_deterministic(chat_pb2.ChatRequest(), model(temperature=0.4))


def test_the_cache_key_is_the_model_the_prompt_and_the_output_limit() -> None:
    prompt = [chat_pb2.PromptMessage(role="system", content="s"), chat_pb2.PromptMessage(role="user", content="q")]
    key = cache_key("m", "up-m", 100, prompt)
    assert key == cache_key("m", "up-m", 100, list(prompt))
    assert key != cache_key("m2", "up-m", 100, prompt)
    assert key != cache_key("m", "up-m", 101, prompt)
    other = [prompt[0], chat_pb2.PromptMessage(role="user", content="q ")]
    assert key != cache_key("m", "up-m", 100, other)
    with_image = [prompt[0], chat_pb2.PromptMessage(role="user", content="q", images=[chat_pb2.ImagePart(data=b"x")])]
    assert key != cache_key("m", "up-m", 100, with_image)
