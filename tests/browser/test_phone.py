"""A phone-sized screen, used with the keyboard only; every control has a name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from parley_dev.stack import Stack
from tests.support.browser import DEV_KEY, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

PHONE: ViewportSize = {"width": 390, "height": 844}

# Form controls without a label and buttons without a name, as "tag#id".
UNNAMED_CONTROLS = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((node) => node.checkVisibility())
  .filter((node) => node.tagName === "BUTTON"
    ? !(node.textContent.trim() || node.getAttribute("aria-label"))
    : node.labels.length === 0 && !node.getAttribute("aria-label"))
  .map((node) => `${node.tagName.toLowerCase()}#${node.id}`)"""


@pytest.fixture
async def phone(browser: Browser, stack: Stack) -> AsyncIterator[Page]:
    context = await browser.new_context(
        base_url=stack.base_url, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    tab = await context.new_page()
    yield tab
    await context.close()


async def test_a_phone_sized_screen_works_with_the_keyboard_alone(phone: Page) -> None:
    chat = ChatPage(phone)
    await phone.goto("/")
    await expect(phone.get_by_label("API key")).to_be_focused()
    await chat.screenshot(SCREENSHOTS / "phone-sign-in.png")
    await phone.keyboard.type(DEV_KEY)
    await phone.keyboard.press("Enter")
    await expect(phone.locator("#workspace")).to_have_attribute("aria-busy", "false")

    drawer = phone.get_by_role("button", name="Conversations", exact=True)
    await expect(chat.conversations).to_be_hidden()
    await drawer.focus()
    await phone.keyboard.press("Enter")
    await expect(drawer).to_have_attribute("aria-expanded", "true")
    await expect(chat.conversations).to_be_visible()
    await expect(phone.get_by_role("button", name="New conversation")).to_be_focused()
    await chat.screenshot(SCREENSHOTS / "phone-drawer.png")
    await phone.keyboard.press("Escape")
    await expect(chat.conversations).to_be_hidden()
    await expect(drawer).to_be_focused()

    await phone.keyboard.press("Enter")
    await phone.keyboard.press("Enter")  # "New conversation": opens it and closes the drawer
    await expect(chat.conversations).to_be_hidden()
    await expect(chat.composer).to_be_focused()
    await phone.keyboard.type("Hello from a small screen")
    await phone.keyboard.press("Enter")
    await chat.wait_for_status("complete")

    assert await phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    box = await chat.composer.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] + box["height"] <= PHONE["height"]
    assert await phone.evaluate(UNNAMED_CONTROLS) == []
    await chat.screenshot(SCREENSHOTS / "phone-answer.png")
