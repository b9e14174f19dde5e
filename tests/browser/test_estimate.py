"""Before sending: the draft's token count and cost; and what is left of the monthly budget."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import BrowserContext, Page, Request, Route, expect

from parley_dev.stack import Stack
from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, FRANK_KEY, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def count_text(counted: Mapping[str, Any]) -> str:
    """An answer of POST /v1/tokens/count as the page should show it (costs below $1 with 2 to 4 decimals)."""
    approx = "≈ " if counted["estimated"] else ""
    cost = f"{counted['cost_estimate_micros'] / 1_000_000:.4f}".rstrip("0")
    cost += "0" * (2 - len(cost.split(".")[1]))
    return f"{approx}{counted['input_tokens']:,} tokens · up to ${cost}"


def record_counts(page: Page) -> list[dict[str, Any]]:
    """The bodies of the page's POST /v1/tokens/count requests, as they go out."""
    bodies: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/v1/tokens/count"):
            bodies.append(json.loads(request.post_data or "{}"))

    page.on("request", on_request)
    return bodies


def budget_text(headers: Mapping[str, str]) -> str:
    """The X-Budget-* headers of an API answer as the page should show them."""
    parts = []
    if "x-budget-tokens-remaining" in headers:
        parts.append(f"{int(headers['x-budget-tokens-remaining']):,} tokens")
    if "x-budget-cost-remaining-micros" in headers:
        parts.append(f"${int(headers['x-budget-cost-remaining-micros']) / 1_000_000:,.2f}")
    return " · ".join(parts) + " left this month" if parts else "No monthly limit"


async def test_the_draft_shows_the_token_count_and_cost_the_api_gives(page: Page, api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={"title": "Counting tokens"})).json()["id"]
    await complete_turn(api, conversation, "A first question, so there is some history", max_output_tokens=8)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{conversation}")
    estimate = page.locator("#estimate")
    await expect(estimate).to_be_empty()

    counted_requests = record_counts(page)
    draft = "How many tokens is this question, and what could its answer cost me?"
    await chat.composer.fill(draft)
    counted = (await api.post("/v1/tokens/count", json={"conversation_id": conversation, "content": draft})).json()
    assert counted["input_tokens"] > 10, counted
    await expect(estimate).to_have_text(count_text(counted))
    assert counted_requests[-1] == {"conversation_id": conversation, "content": draft}
    await chat.screenshot(SCREENSHOTS / "desktop-draft-estimate.png")

    # Typed one key at a time: one request after the typing pauses, for the whole draft.
    longer = draft + " Please answer at length."
    asked = len(counted_requests)
    await chat.composer.press_sequentially(" Please answer at length.", delay=20)
    counted_longer = (
        await api.post("/v1/tokens/count", json={"conversation_id": conversation, "content": longer})
    ).json()
    assert counted_longer["input_tokens"] > counted["input_tokens"]
    await expect(estimate).to_have_text(count_text(counted_longer))
    assert len(counted_requests) - asked < 5, "debounced: not one request per keystroke"
    assert counted_requests[-1]["content"] == longer

    # Too long to send: said before sending.
    await chat.composer.fill("x" * 32_001)
    await expect(estimate).to_contain_text("This message is too long to send (at most 32,000 characters).")
    await expect(estimate).to_have_attribute("data-state", "error")

    # Nothing for an empty draft.
    await chat.composer.fill("   ")
    await expect(estimate).to_be_empty()


async def test_a_priced_estimated_count_shows_the_approximate_sign_and_cost(page: Page) -> None:
    # The demo model is free and counted with its own tokenizer; a priced model with a stand-in
    # tokenizer answers like this.
    async def priced(route: Route) -> None:
        body = {
            "model": "priced",
            "input_tokens": 1234,
            "estimated": True,
            "max_output_tokens": 1024,
            "context_window": 8192,
            "dropped_messages": 0,
            "truncated": False,
            "input_cost_micros": 1234,
            "cost_estimate_micros": 3100,
        }
        await route.fulfill(json=body)

    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    await page.route("**/v1/tokens/count", priced)
    await chat.composer.fill("What would this cost on a priced model?")
    await expect(page.locator("#estimate")).to_have_text("≈ 1,234 tokens · up to $0.0031")
    await expect(page.locator("#estimate")).to_have_attribute("data-state", "estimated")


async def test_the_remaining_monthly_budget_matches_the_api_and_goes_down_after_a_turn(
    page: Page, context: BrowserContext, stack: Stack, api: httpx.AsyncClient
) -> None:
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    budget = page.locator("#budget")
    await chat.new_chat()

    async def now() -> httpx.Headers:
        reply = await api.get("/v1/models")
        reply.raise_for_status()
        return reply.headers

    before = await now()
    assert before["x-budget-plan"] == "browser"
    tokens_before = int(before["x-budget-tokens-remaining"])
    # The page's last answer may predate an answer of another test being charged: a draft asks again.
    await chat.composer.fill("What is left?")
    await expect(budget).to_have_text(budget_text(await now()))
    await chat.composer.fill("")

    await chat.send("Spend a few tokens of my monthly budget, please")
    await chat.wait_for_status("complete")

    async def went_down() -> bool:
        headers = await now()
        shown = await budget.text_content()
        return int(headers["x-budget-tokens-remaining"]) < tokens_before and shown == budget_text(headers)

    await eventually(went_down, what="the page shows the budget the API gives, lower after the turn")
    await chat.screenshot(SCREENSHOTS / "desktop-monthly-budget.png")

    # A user whose plan has no limit.
    other = await context.new_page()
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {FRANK_KEY}"}, timeout=30
    ) as frank:
        headers = (await frank.get("/v1/models")).headers
    assert "x-budget-tokens-remaining" not in headers and headers["x-budget-plan"] == "unlimited"
    await ChatPage(other).sign_in(FRANK_KEY)
    await expect(other.locator("#budget")).to_have_text("No monthly limit")
    await other.close()


async def test_an_attached_image_is_counted_in_the_estimate(page: Page, api: httpx.AsyncClient, tmp_path: Path) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    counted_requests = record_counts(page)
    draft = "What is in this picture?"
    await chat.composer.fill(draft)
    estimate = page.locator("#estimate")
    await expect(estimate).not_to_be_empty()
    without = (await api.post("/v1/tokens/count", json={"content": draft})).json()
    await expect(estimate).to_have_text(count_text(without))

    picture = tmp_path / "wide.png"
    Image.new("RGB", (1600, 1200), (30, 90, 160)).save(picture)
    await chat.attach(picture)

    async def counts_with_the_image() -> list[dict[str, Any]]:
        return [r for r in counted_requests if r.get("media_ids")]

    with_image = await eventually(counts_with_the_image, what="a count with the image")
    body = with_image[-1]
    assert body["content"] == draft and len(body["media_ids"]) == 1
    counted = (await api.post("/v1/tokens/count", json=body)).json()
    assert counted["input_tokens"] > without["input_tokens"] + 80, "the image's tokens are in the count"
    await expect(estimate).to_have_text(count_text(counted))
    # Removing the image takes its tokens out again.
    await chat.attachments().first.get_by_role("button", name=re.compile("Remove")).click()
    await expect(estimate).to_have_text(count_text(without))
