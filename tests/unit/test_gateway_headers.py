"""The HTTP headers the gateway sends: a user's budget (X-Budget-*) on every authenticated
response, and with a refusal its Retry-After and the limit that refused it, exactly as a client
reads them; every authenticated route counts the request against the user's rate limit."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import BaseRoute

from parley_common.budgets.stream_slots import Refused
from parley_common.budgets.users import BudgetExceeded, BudgetStatus, MonthlySpend, PlanLimits
from parley_common.errors import NotFound, RateLimited
from parley_gateway.app import create_app
from parley_gateway.deps import count_request, current_user
from parley_gateway.errors import error_headers
from parley_gateway.ratelimit import RequestRateExceeded, budget_headers
from parley_gateway.settings import GatewaySettings
from parley_gateway.turns.connection_slot import too_many_streams


def status(tokens: int, cost: int, limits: PlanLimits, held: MonthlySpend | None = None) -> BudgetStatus:
    return BudgetStatus("free", limits, MonthlySpend(tokens, cost), 1_800_000_000, held=held or MonthlySpend())


def test_budget_headers_say_what_is_left_and_when_it_resets() -> None:
    headers = budget_headers(status(250, 100, PlanLimits(monthly_tokens=1000, monthly_cost_micros=500)))
    assert headers == {
        "X-Budget-Plan": "free",
        "X-Budget-Reset": "1800000000",
        "X-Budget-Tokens-Remaining": "750",
        "X-Budget-Cost-Remaining-Micros": "400",
    }
    assert "X-Budget-Tokens-Remaining" not in budget_headers(status(0, 0, PlanLimits(monthly_cost_micros=5)))


def test_what_running_turns_hold_is_not_shown_as_left() -> None:
    limits = PlanLimits(monthly_tokens=1000, monthly_cost_micros=500)
    busy = status(400, 100, limits, held=MonthlySpend(500, 300))
    assert budget_headers(busy)["X-Budget-Tokens-Remaining"] == "100"


def test_a_budget_refusal_carries_the_budget_and_when_to_try_again() -> None:
    used_up = status(1000, 0, PlanLimits(monthly_tokens=1000))
    refusal = BudgetExceeded("the monthly tokens limit is used up", status=used_up, retry_after_s=3600)
    assert refusal.http_status == 429 and refusal.code == "user_budget_exceeded"
    assert error_headers(refusal) == {
        "X-Budget-Plan": "free",
        "X-Budget-Reset": "1800000000",
        "X-Budget-Tokens-Remaining": "0",
        "Retry-After": "3600",
    }


def test_a_rate_limit_refusal_carries_the_limit_and_when_to_try_again() -> None:
    rate = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1800000060"}
    refusal = RequestRateExceeded(rate, retry_after_s=12)
    assert (refusal.http_status, refusal.code, refusal.message) == (429, "rate_limited", "too many requests; slow down")
    assert error_headers(refusal) == {**rate, "Retry-After": "12"}


def test_too_many_streams_says_how_many_and_to_try_again_in_a_second() -> None:
    refusal = too_many_streams(Refused(3))
    assert refusal.code == "too_many_streams" and "already have 3 streams" in refusal.message
    assert error_headers(refusal) == {"Retry-After": "1"}


def test_other_errors_carry_only_their_own_retry_hint() -> None:
    assert error_headers(NotFound("response not found", code="response_not_found")) == {}
    assert error_headers(RateLimited("busy", code="image_generation_busy", retry_after_s=3)) == {"Retry-After": "3"}


def test_every_authenticated_route_counts_the_request_against_the_rate_limit() -> None:
    app = create_app(GatewaySettings(dev_api_key=SecretStr("k" * 20)))

    def calls(dependant: object) -> set[object]:
        found = {getattr(dependant, "call", None)}
        for sub in getattr(dependant, "dependencies", []):
            found |= calls(sub)
        return found

    def api_routes(routes: list[BaseRoute]) -> list[APIRoute]:
        # An included router is one route holding its own (FastAPI's `_IncludedRouter`).
        found: list[APIRoute] = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif (included := getattr(route, "original_router", None)) is not None:
                found += api_routes(included.routes)
        return found

    authenticated = [r for r in api_routes(app.routes) if current_user in calls(r.dependant)]
    assert len(authenticated) > 20
    assert [r.path for r in authenticated if count_request not in calls(r.dependant)] == []


def test_no_route_hops_to_a_thread_for_a_dependency_or_its_handler() -> None:
    """FastAPI runs a plain `def` dependency or handler in a thread pool: a thread hop per call
    per request, which the profile of short turns showed (8% of the gateway's CPU). A dependency
    with `yield` (not a coroutine function either) is refused too: its cleanup would run when a
    stream's response detaches from the request (sse_response.py), not when the stream ends."""
    app = create_app(GatewaySettings(dev_api_key=SecretStr("k" * 20)))

    def sync_calls(dependant: object) -> list[str]:
        call = getattr(dependant, "call", None)
        found = [] if call is None or inspect.iscoroutinefunction(call) else [getattr(call, "__qualname__", repr(call))]
        for sub in getattr(dependant, "dependencies", []):
            found += sync_calls(sub)
        return found

    routes: list[APIRoute] = []
    pending: list[BaseRoute] = list(app.routes)
    while pending:
        route = pending.pop()
        if isinstance(route, APIRoute):
            routes.append(route)
        elif (included := getattr(route, "original_router", None)) is not None:
            pending += included.routes
    assert len(routes) > 20
    assert {r.path: sync_calls(r.dependant) for r in routes if sync_calls(r.dependant)} == {}
