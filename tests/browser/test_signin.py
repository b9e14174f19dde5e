"""Signing in: "Remember me on this device" keeps the key for new tabs and a restarted browser;
signing out forgets it, deletes the saved history, and signs out the other tabs that used it."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from parley_dev.stack import Stack
from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DATABASES = "async () => (await indexedDB.databases()).map((db) => db.name)"
REMEMBERED = "() => localStorage.getItem('parley.apiKey')"


def database_of(key: str) -> str:
    """The saved-history database of an API key (store.js)."""
    return "parley-history-" + hashlib.sha256(key.encode()).hexdigest()


async def signed_in(page: Page) -> None:
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")


async def test_remember_me_keeps_the_key_on_this_device_until_sign_out(
    page: Page, context: BrowserContext, browser: Browser, stack: Stack, api: httpx.AsyncClient
) -> None:
    conversation = (await api.post("/v1/conversations", json={"title": "Remembered on this laptop"})).json()["id"]
    await complete_turn(api, conversation, "Something worth keeping", max_output_tokens=4)
    chat = ChatPage(page)

    # Not remembered: the key belongs to this tab only.
    await chat.sign_in(DEV_KEY)
    other = await context.new_page()
    await other.goto("/")
    await expect(other.get_by_label("API key")).to_be_visible()
    await expect(other.get_by_label("Remember me on this device")).not_to_be_checked()
    await other.close()
    assert await page.evaluate(REMEMBERED) is None
    await page.get_by_role("button", name="Sign out").click()

    # Remembered: a new tab, and a restarted browser, sign in by themselves.
    await page.get_by_label("API key").fill(DEV_KEY)
    await page.get_by_label("Remember me on this device").check()
    await chat.screenshot(SCREENSHOTS / "desktop-sign-in-remember.png")
    await page.get_by_role("button", name="Sign in").click()
    await signed_in(page)
    await chat.conversation("Remembered on this laptop").click()
    await expect(chat.messages.locator(".message")).to_have_count(2)
    tab = await context.new_page()
    await tab.goto(f"/#{conversation}")
    await signed_in(tab)
    await expect(tab.locator("#conversation-title")).to_have_text("Remembered on this laptop")
    restarted = await browser.new_context(base_url=stack.base_url, storage_state=await context.storage_state())
    try:
        after_restart = await restarted.new_page()
        await after_restart.goto("/")
        await signed_in(after_restart)
    finally:
        await restarted.close()
    await eventually(
        lambda: page.evaluate(f"async () => (await ({DATABASES})()).includes({database_of(DEV_KEY)!r})"),
        what="history saved on this device",
    )

    # Signing out (in the new tab) forgets the key and the saved history, and signs out this tab too.
    await tab.get_by_role("button", name="Sign out").click()
    await expect(tab.get_by_label("API key")).to_be_visible()
    await expect(page.get_by_label("API key")).to_be_visible()
    assert await tab.evaluate(REMEMBERED) is None
    await eventually(
        lambda: page.evaluate(f"async () => !(await ({DATABASES})()).includes({database_of(DEV_KEY)!r})"),
        what="signing out deleted the saved history",
    )
    await page.reload()
    await expect(page.get_by_label("API key")).to_be_visible()
    await expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    await tab.close()
