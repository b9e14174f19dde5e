"""History after a reload, paging back, the conversation list, and changes made elsewhere."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from playwright.async_api import BrowserContext, Dialog, Page, Request, expect

from parley_dev.stack import Stack
from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, FRANK_KEY
from tests.support.polling import eventually

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CURSOR = "() => sessionStorage.getItem('parley.syncCursor')"


async def test_history_survives_a_reload_and_pages_back(page: Page, api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={"title": "Long history"})).json()["id"]
    for turn in range(16):  # 32 messages: more than the page's first 30
        await complete_turn(api, conversation, f"turn {turn:02d}", max_output_tokens=1)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{conversation}")
    await expect(page.locator("#conversation-title")).to_have_text("Long history")
    await expect(chat.messages.locator(".message")).to_have_count(30)

    older = page.get_by_role("button", name="Load older messages")
    await older.click()
    await expect(chat.messages.locator(".message")).to_have_count(32)
    await expect(older).to_be_hidden()
    await expect(chat.messages.locator(".message.user .text").first).to_have_text("turn 00")

    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator("#conversation-title")).to_have_text("Long history")
    await expect(chat.messages.locator(".message")).to_have_count(30)
    await expect(chat.messages.locator(".message.user .text").last).to_have_text("turn 15")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.reload()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0


async def test_the_conversation_list_pages_renames_and_deletes(page: Page, stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {FRANK_KEY}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as frank:
        ids = [
            (await frank.post("/v1/conversations", json={"title": f"Topic {n:02d}"})).json()["id"] for n in range(23)
        ]
        chat = ChatPage(page)
        await chat.sign_in(FRANK_KEY)
        rows = chat.conversations.locator("li")
        await expect(rows).to_have_count(20)
        await expect(rows.first).to_have_text("Topic 22✎✕")
        more = page.get_by_role("button", name="Load more conversations")
        await more.click()
        await expect(rows).to_have_count(23)
        await expect(more).to_be_hidden()

        await page.get_by_role("button", name="Rename “Topic 05”").click()
        title = page.get_by_label("New title")
        await expect(title).to_be_focused()
        await title.fill("Renamed topic")
        await title.press("Enter")
        await expect(chat.conversation("Renamed topic")).to_be_visible()
        assert (await frank.get(f"/v1/conversations/{ids[5]}")).json()["title"] == "Renamed topic"

        async def confirm(dialog: Dialog) -> None:
            assert "Topic 07" in dialog.message
            await dialog.accept()

        page.once("dialog", confirm)
        await page.get_by_role("button", name="Delete “Topic 07”").click()
        await expect(chat.conversation("Topic 07")).to_have_count(0)
        assert (await frank.get(f"/v1/conversations/{ids[7]}")).status_code == 404
        await expect(rows).to_have_count(22)


async def test_changes_made_while_offline_arrive_on_reconnect(
    page: Page, context: BrowserContext, api: httpx.AsyncClient
) -> None:
    here = (await api.post("/v1/conversations", json={"title": "Before going offline"})).json()["id"]
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{here}")
    await expect(page.locator("#conversation-title")).to_have_text("Before going offline")
    cursor = await eventually(lambda: page.evaluate(CURSOR), what="a sync cursor")
    asked_since: list[str] = []

    def on_request(request: Request) -> None:
        if urlparse(request.url).path == "/v1/sync":
            asked_since.extend(parse_qs(urlparse(request.url).query).get("since", [""]))

    page.on("request", on_request)
    await context.set_offline(True)
    await expect(page.locator("#connection")).to_have_text("Offline")
    # Another device of the same user, meanwhile:
    await api.post("/v1/conversations", json={"title": "Made on another device"})
    await api.patch(f"/v1/conversations/{here}", json={"title": "Renamed on another device"})
    await complete_turn(api, here, "sent from my phone")

    await context.set_offline(False)
    await expect(page.locator("#connection")).to_have_text("Online")
    await expect(chat.conversation("Made on another device")).to_be_visible()
    await expect(page.locator("#conversation-title")).to_have_text("Renamed on another device")
    await expect(chat.messages.locator(".message.user .text")).to_have_text("sent from my phone")
    await expect(chat.messages.locator(".message.assistant .text")).to_contain_text("You said")
    assert cursor in asked_since, "the sync continued from the saved cursor"
    assert await page.evaluate(CURSOR) != cursor
