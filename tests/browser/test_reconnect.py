"""Offline, then online again: a conversation opened while the server could not be reached
loads by itself once it can, and the "cannot be reached" notice goes away."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CANNOT_BE_REACHED = "Parley cannot be reached. Check your connection; it tries again when you are back online."


async def test_a_conversation_opened_offline_loads_when_the_connection_returns(
    page: Page, context: BrowserContext, api: httpx.AsyncClient
) -> None:
    here = (await api.post("/v1/conversations", json={"title": "Open before the tunnel"})).json()["id"]
    there = (await api.post("/v1/conversations", json={"title": "Opened in the tunnel"})).json()["id"]
    await complete_turn(api, there, "What did I ask before the tunnel?", max_output_tokens=6)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{here}")
    await expect(page.locator("#conversation-title")).to_have_text("Open before the tunnel")

    await context.set_offline(True)
    # Never opened on this device, so not saved here: nothing to show until the server answers.
    await chat.conversation("Opened in the tunnel").click()
    await expect(chat.notice).to_have_text(CANNOT_BE_REACHED)
    await expect(page.locator("#empty")).to_contain_text("loads by itself when the connection is back")
    await expect(page.locator("#connection")).to_have_text("Offline")
    await chat.screenshot(SCREENSHOTS / "desktop-opened-offline.png")

    await context.set_offline(False)
    await expect(chat.messages.locator(".message.user .text")).to_have_text("What did I ask before the tunnel?")
    await expect(chat.messages.locator(".message")).to_have_count(2)
    await expect(chat.notice).to_be_empty()
    await expect(page.locator("#empty")).to_be_hidden()
    await expect(page.locator("#connection")).to_have_text("Online")
    await expect(page.locator("#conversation-title")).to_have_text("Opened in the tunnel")
    assert await chat.current_conversation_id() == there
