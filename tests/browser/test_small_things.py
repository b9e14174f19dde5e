"""Small things seen in daily use: costs in one format everywhere, no internal media id in a
generated image's answer, New conversation creates nothing on the server until the first send,
and the tab is titled after the conversation."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, Request, expect

from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, PRICED_MODEL, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage, echo, image_loaded

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def money(micros: int) -> str:
    """A cost as the page must show it, everywhere: cents from $1, up to 4 decimals below."""
    dollars = micros / 1_000_000
    if 0 < dollars < 0.0001:
        return "<$0.0001"
    if dollars >= 1:
        return f"${dollars:,.2f}"
    text = f"{dollars:.4f}".rstrip("0")
    return "$" + (text + "0" * (2 - len(text.split(".")[1])))


async def test_costs_read_the_same_way_in_the_estimate_the_answer_and_the_budget(
    page: Page, api: httpx.AsyncClient
) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.pick_model(PRICED_MODEL)
    draft = echo("A priced answer, please, with a handful of words in it.")
    await chat.composer.fill(draft)
    counted = (await api.post("/v1/tokens/count", json={"content": draft, "model": PRICED_MODEL})).json()
    assert 0 < counted["cost_estimate_micros"] < 1_000_000, counted
    estimate = page.locator("#estimate")
    await expect(estimate).to_contain_text(f"up to {money(counted['cost_estimate_micros'])}")
    await chat.composer.press("Enter")
    await chat.wait_for_status("complete")

    saved = await saved_answer(api, await chat.current_conversation_id())
    cost = saved["usage"]["cost_micros"]
    assert cost > 0, saved["usage"]
    meta = chat.last_answer().locator(".meta")
    await expect(meta).to_contain_text(f"· {money(cost)}")

    async def budget_matches() -> bool:
        headers = (await api.get("/v1/models")).headers
        return await page.locator("#budget").text_content() == (
            f"{int(headers['x-budget-tokens-remaining']):,} tokens · "
            f"{money(int(headers['x-budget-cost-remaining-micros']))} left this month"
        )

    await chat.composer.fill("And another?")
    await eventually(budget_matches, what="the budget in the same format")
    # No cost anywhere in 6 decimals (or any other format).
    shown = " ".join([await meta.text_content() or "", await page.locator(".composer-status").text_content() or ""])
    for amount in re.findall(r"<?\$[\d,.]+", shown):
        assert re.fullmatch(r"\$\d{1,3}(,\d{3})*\.\d{2}|\$0\.\d{2,4}|<\$0\.0001", amount), amount
    await chat.screenshot(SCREENSHOTS / "desktop-costs.png")


async def test_a_generated_image_answer_shows_no_media_id(page: Page, api: httpx.AsyncClient) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.send("/image a lighthouse at dusk")
    await chat.wait_for_status("complete")
    picture = chat.last_answer().get_by_role("img", name="a lighthouse at dusk")
    await expect(picture).to_be_visible()
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert "med_" in saved["content"], "history keeps the id (the page finds the picture by it)"
    text = chat.last_answer().locator(".text")
    await expect(text).to_have_text(re.compile(r'^Here is an image of "a lighthouse at dusk" \(\d+x\d+\)\.$'))

    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    await expect(picture).to_be_visible()
    await eventually(lambda: image_loaded(picture), what="the picture from history loaded")
    await expect(text).not_to_contain_text("med_")
    await expect(chat.last_answer().locator(".meta")).not_to_contain_text("med_")


async def test_new_conversation_waits_for_the_first_message_and_the_tab_shows_the_title(
    page: Page, api: httpx.AsyncClient
) -> None:
    other = (await api.post("/v1/conversations", json={"title": "An older chat"})).json()["id"]
    creates: list[Request] = []
    page.on(
        "request",
        lambda r: creates.append(r) if r.method == "POST" and r.url.endswith("/v1/conversations") else None,
    )
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{other}")
    await expect(page).to_have_title("An older chat · Parley")
    rows = await chat.conversations.locator("li").count()
    for _ in range(3):
        await chat.new_chat()
    await expect(page).to_have_title("New conversation · Parley")
    assert creates == [], "nothing is created before a message is sent"
    assert await chat.conversations.locator("li").count() == rows

    await chat.send("Where do swallows spend the winter?")
    await expect(chat.conversation("Where do swallows spend the winter?")).to_be_visible()
    assert len(creates) == 1
    await expect(page).to_have_title("Where do swallows spend the winter? · Parley")
    await expect(chat.conversations.locator("li")).to_have_count(rows + 1)
    await chat.wait_for_status("complete")

    conversation = await chat.current_conversation_id()
    await page.get_by_role("button", name="Rename “Where do swallows spend the winter?”").click()
    await page.get_by_label("New title").fill("Swallows")
    await page.get_by_label("New title").press("Enter")
    await expect(page).to_have_title("Swallows · Parley")
    assert (await api.get(f"/v1/conversations/{conversation}")).json()["title"] == "Swallows"
    await chat.conversation("An older chat").click()
    await expect(page).to_have_title("An older chat · Parley")
