"""Answers in the background: by default leaving a conversation stops its answer and the thread
says so (test_chat.py); with the setting on, the answer finishes while the user is elsewhere, its
sidebar row marked "generating…"."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PROMPT = "Tell me, in a few friendly sentences, why answers may go on while I read another conversation"
SETTING = "Let answers finish when I switch conversations"


async def test_with_the_setting_on_an_answer_finishes_in_the_background(page: Page, api: httpx.AsyncClient) -> None:
    quiet = (await api.post("/v1/conversations", json={"title": "Meanwhile, elsewhere"})).json()["id"]
    cancels: list[str] = []
    page.on("request", lambda r: cancels.append(r.url) if r.method == "POST" and r.url.endswith("/cancel") else None)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    await page.get_by_text("Settings").click()
    await page.get_by_label(SETTING).check()
    await chat.new_chat()
    await chat.send(PROMPT)
    await chat.wait_for_answer_text()
    busy = await chat.current_conversation_id()
    row = chat.conversations.locator(f'[data-conversation="{busy}"]')
    await expect(row).not_to_contain_text("generating…")  # (the thread says so here)

    await chat.conversation("Meanwhile, elsewhere").click()
    await expect(page.locator("#conversation-title")).to_have_text("Meanwhile, elsewhere")
    await expect(row).to_contain_text("generating…")
    await chat.screenshot(SCREENSHOTS / "desktop-generating-in-background.png")
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("button", name="Conversations", exact=True).click()
    await expect(row).to_contain_text("generating…")
    await chat.screenshot(SCREENSHOTS / "phone-generating-in-background.png")
    await page.keyboard.press("Escape")
    await page.set_viewport_size({"width": 1280, "height": 800})

    finished = await saved_answer(api, busy, status="complete")
    await expect(row).not_to_contain_text("generating…")
    assert cancels == [], "nothing was stopped"
    await row.locator("button.open").click()
    await chat.wait_for_status("complete")
    assert await chat.answer_text() == finished["content"]
    await expect(chat.last_answer().locator(".meta")).not_to_contain_text("Stopped")
    assert quiet != busy

    # The setting is this device's: still on after a reload.
    await page.reload()
    await expect(page.get_by_label(SETTING)).to_be_checked()
