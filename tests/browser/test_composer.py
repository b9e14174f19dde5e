"""The composer: it grows with its text, Send and Stop are one button, Escape stops an answer,
and "Jump to latest" appears when the reader scrolls up while an answer is written."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect

from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, ECHO_MODEL, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage, echo

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# Long enough that the demo model's answer (which quotes it) takes a few seconds.
PROMPT = "Describe, in a few friendly sentences, how a message travels from my keyboard to the model"
HEIGHT = "(node) => node.getBoundingClientRect().height"
SCROLLS = "(node) => node.scrollHeight > node.clientHeight"
# The thread is scrolled to its end (within the distance at which it follows new text).
AT_BOTTOM = "(node) => node.scrollHeight - node.scrollTop - node.clientHeight < 48"


def lines(count: int) -> str:
    return "\n".join(f"Line {n} of a long message" for n in range(count))


async def test_the_composer_grows_with_its_text_up_to_a_limit(page: Page) -> None:
    chat = ChatPage(page)
    await page.set_viewport_size(DESKTOP)
    await chat.sign_in(DEV_KEY)
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(viewport)
        box = chat.composer
        await box.fill("One line")
        one = await box.evaluate(HEIGHT)
        await box.fill(lines(5))
        five = await box.evaluate(HEIGHT)
        assert five > one + 3 * 16, f"{size}: five lines did not make it taller ({one} -> {five})"
        assert not await box.evaluate(SCROLLS), f"{size}: five lines should all show"
        await box.fill(lines(80))
        most = await box.evaluate(HEIGHT)
        assert five < most <= 0.45 * viewport["height"], f"{size}: not capped ({most} of {viewport['height']})"
        assert await box.evaluate(SCROLLS), f"{size}: the rest of a long text scrolls inside the box"
        composer = await page.locator("#composer").bounding_box()
        assert composer is not None and composer["y"] + composer["height"] <= viewport["height"]
        await chat.screenshot(SCREENSHOTS / f"{size}-composer-grown.png")
        # Typed with the keyboard too (Shift+Enter starts a line), and back to one line when emptied.
        await box.fill("")
        await box.press_sequentially("First")
        await box.press("Shift+Enter")
        await box.press_sequentially("Second")
        assert await box.evaluate(HEIGHT) > one
        await box.fill("")
        assert await box.evaluate(HEIGHT) == one
        if size == "phone":
            # The box gets the room a second (Stop) button took.
            width = await box.evaluate("(node) => node.getBoundingClientRect().width")
            assert width >= 230, f"the phone's message box is {width} px wide"


async def test_send_and_stop_are_one_button_and_escape_stops_the_answer(page: Page, api: httpx.AsyncClient) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    button = page.locator("#composer").get_by_role("button", name=re.compile(r"^(Send|Stop)$"))
    await expect(button).to_have_text("Send")
    where = await button.bounding_box()
    await chat.send(PROMPT)
    await chat.wait_for_answer_text()
    await expect(button).to_have_count(1)
    await expect(button).to_have_text("Stop")
    await expect(button).to_be_enabled()
    assert await button.bounding_box() == where, "Stop is where Send was"
    await chat.screenshot(SCREENSHOTS / "desktop-stop-button.png")

    # The next question can be written meanwhile; Enter neither sends it nor stops the answer.
    await chat.composer.fill("And what happens when the network drops?")
    await chat.composer.press("Enter")
    await expect(chat.composer).to_have_value("And what happens when the network drops?")
    await expect(chat.last_answer()).to_have_attribute("aria-busy", "true")

    await chat.composer.press("Escape")
    await chat.wait_for_status("interrupted")
    meta = chat.last_answer().locator(".meta")
    await expect(meta).to_contain_text("Stopped")
    # No "0 tokens · $0.000000" for an answer stopped early: its cost, when it has one, else nothing.
    shown = await meta.text_content() or ""
    assert not re.search(r"\b0 tokens in · 0 out|\$0\.0{5,}", shown), shown
    saved = await saved_answer(api, await chat.current_conversation_id(), status="interrupted")
    assert await chat.answer_text() == saved["content"]
    await expect(button).to_have_text("Send")
    await expect(button).to_be_enabled()
    await expect(chat.composer).to_have_value("And what happens when the network drops?")


async def test_jump_to_latest_appears_when_scrolled_up_during_an_answer(page: Page) -> None:
    await page.set_viewport_size({"width": 1000, "height": 560})
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.pick_model(ECHO_MODEL)
    paragraphs = "\n\n".join(f"Paragraph {n} says a few words to fill the screen." for n in range(30))
    await chat.send(echo(paragraphs, tokens_per_s=30))
    scroller = page.locator("#scroller")
    jump = page.get_by_role("button", name="Jump to latest")

    async def overflowing() -> bool:
        return bool(await scroller.evaluate("(node) => node.scrollHeight > node.clientHeight + 200"))

    await eventually(overflowing, what="the answer is taller than the thread")
    await expect(chat.last_answer()).to_have_attribute("data-status", "streaming")
    assert await scroller.evaluate(AT_BOTTOM), "the thread follows the answer"
    await expect(jump).to_be_hidden()

    await scroller.evaluate("(node) => node.scrollTo(0, 0)")
    await expect(jump).to_be_visible()
    height = await scroller.evaluate("(node) => node.scrollHeight")

    async def grew_below() -> bool:
        return bool(await scroller.evaluate(f"(node) => node.scrollHeight > {height} + 40 && node.scrollTop === 0"))

    await eventually(grew_below, what="text arrived below while the reader stayed at the top")
    await chat.screenshot(SCREENSHOTS / "desktop-jump-to-latest.png")

    await jump.click()
    assert await scroller.evaluate(AT_BOTTOM)
    await expect(jump).to_be_hidden()
    await chat.wait_for_status("complete")
    assert await scroller.evaluate(AT_BOTTOM), "it followed the answer to its end"
    await expect(jump).to_be_hidden()
