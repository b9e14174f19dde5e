"""Signing in, streaming an answer token by token, stopping one, switching conversations."""

from __future__ import annotations

import httpx
import pytest
from playwright.async_api import Page, expect

from parley_dev.stack import Stack
from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, PROMPT, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Long enough that the demo model's answer (which quotes it) takes a few seconds.


async def test_sign_in_and_watch_the_answer_stream_token_by_token(
    page: Page, stack: Stack, api: httpx.AsyncClient
) -> None:
    chat = ChatPage(page)
    reply = await page.goto("/")
    assert reply is not None
    policy = reply.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy

    await page.get_by_label("API key").fill("pk_not_a_real_key_000000")
    await page.get_by_role("button", name="Sign in").click()
    refused = "That API key was not accepted. Check it and sign in again."
    await expect(page.locator("#sign-in-error")).to_have_text(refused)

    await chat.sign_in(DEV_KEY)
    await expect(page.get_by_role("combobox", name="Model", exact=True)).to_have_value("demo")
    await chat.new_chat()
    await chat.record()
    # Markup in a message is text, never HTML.
    prompt = f'{PROMPT} <b>bold</b> <img src="x" onerror="window.__pwned = 1">'
    await chat.send(prompt)
    await chat.wait_for_answer_text()
    await expect(chat.last_answer()).to_have_attribute("aria-busy", "true")
    await chat.screenshot(SCREENSHOTS / "desktop-streaming.png")
    await chat.wait_for_status("complete")
    await expect(chat.last_answer()).to_have_attribute("aria-busy", "false")

    lengths = await chat.lengths()
    assert len(set(lengths) - {0}) >= 3, f"the answer did not grow token by token: {lengths}"
    assert lengths == sorted(lengths), f"the answer's text shrank or was replaced: {lengths}"

    conversation_id = await chat.current_conversation_id()
    saved = await saved_answer(api, conversation_id)
    assert await chat.answer_text() == saved["content"], "the page shows exactly the saved answer, once"
    await expect(chat.last_answer().locator(".meta")).to_contain_text("tokens in")
    await expect(chat.messages.locator(".message.user .text")).to_have_text(prompt)
    assert await chat.messages.locator("b, img").count() == 0
    assert await page.evaluate("() => window.__pwned") is None
    # The conversation is named after its first message.
    await expect(chat.conversation("Please explain")).to_be_visible()
    await chat.screenshot(SCREENSHOTS / "desktop-answer.png")


async def test_stop_keeps_the_partial_answer_marked_interrupted(page: Page, api: httpx.AsyncClient) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.send(PROMPT + " (then stop)")
    await chat.wait_for_answer_text()
    await expect(page.get_by_role("button", name="Send")).to_have_count(0)  # Send is Stop meanwhile
    await page.get_by_role("button", name="Stop").click()

    await chat.wait_for_status("interrupted")
    await expect(chat.last_answer().locator(".meta")).to_contain_text("Stopped")
    partial = await chat.answer_text()
    saved = await saved_answer(api, await chat.current_conversation_id(), status="interrupted")
    assert partial, "the text that had arrived stays"
    assert partial == saved["content"]
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    await chat.screenshot(SCREENSHOTS / "desktop-stopped.png")


async def test_switching_conversation_mid_stream_stops_the_answer_and_keeps_it_in_its_own(
    page: Page, api: httpx.AsyncClient
) -> None:
    quiet = (await api.post("/v1/conversations", json={"title": "Quiet conversation"})).json()["id"]
    cancelled: list[str] = []
    page.on("request", lambda r: cancelled.append(r.url) if r.method == "POST" and r.url.endswith("/cancel") else None)
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.send(PROMPT + " (switch away)")
    await chat.wait_for_answer_text()
    busy = await chat.current_conversation_id()
    seen_before_switching = await chat.answer_text()

    await chat.conversation("Quiet conversation").click()
    await expect(page.locator("#conversation-title")).to_have_text("Quiet conversation")
    await chat.record()  # from now on, every text the message list shows
    # Leaving the conversation stopped its answer, as the Stop button does: the server saved
    # what it had generated, marked interrupted, and the page read that answer to its end.
    stopped = await saved_answer(api, busy, status="interrupted")
    assert stopped["content"].startswith(seen_before_switching), "the text shown before the switch stays"
    assert [url.split("/v1/", 1)[1] for url in cancelled] == [f"responses/{stopped['id']}/cancel"], cancelled
    await eventually(
        lambda: page.evaluate("() => sessionStorage.getItem('parley.liveResponses') === '{}'"),
        what="the page finished reading the stopped answer",
    )
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await expect(page.get_by_role("button", name="Stop")).to_have_count(0)
    assert await chat.messages.locator(".message").count() == 0

    # The conversation switched to answers as usual, with none of the other one's text.
    await chat.send("A short question for the quiet conversation")
    await chat.wait_for_status("complete")
    answered = await saved_answer(api, quiet)
    assert await chat.answer_text() == answered["content"]
    await expect(chat.answers()).to_have_count(1)
    assert not any("switch away" in text for text in await chat.shown())
    await chat.screenshot(SCREENSHOTS / "desktop-switched.png")

    # Back in the first conversation: its partial answer, exactly as saved, marked interrupted.
    await chat.record()
    await page.locator(f'[data-conversation="{busy}"] button.open').click()
    await expect(page.locator("#conversation-title")).to_contain_text("Please explain")
    await chat.wait_for_status("interrupted")
    await expect(chat.last_answer().locator(".meta")).to_contain_text("Stopped when you left this conversation")
    assert await chat.answer_text() == stopped["content"]
    await expect(chat.answers()).to_have_count(1)
    assert not any("quiet conversation" in text for text in await chat.shown())
