"""Errors are shown plainly: a 429, a conversation gone elsewhere, an error event in the stream."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest
from playwright.async_api import Page, expect

from parley_dev.infra import free_port
from parley_dev.stack import Stack
from tests.support.browser import DEV_KEY, PROMPT, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_too_many_streams_and_a_vanished_conversation_are_shown(page: Page, stack: Stack) -> None:
    # A gateway of its own, where one answer at a time is the limit.
    port = free_port()
    name = f"gateway@{port}"
    key = "pk_browser_erin_" + secrets.token_urlsafe(16)
    stack.start_service(
        "gateway", port=port, PARLEY_MAX_STREAMS_PER_USER="1", PARLEY_API_KEYS=json.dumps({"erin": key})
    )
    try:
        base = f"http://127.0.0.1:{port}"
        await stack.wait_ready(gateway_url=base)
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as erin:
            first = (await erin.post("/v1/conversations", json={"title": "First"})).json()["id"]
            second = (await erin.post("/v1/conversations", json={"title": "Second"})).json()["id"]
            # Another device holds the only slot (leaving a conversation here would stop its answer).
            held = await erin.send(
                erin.build_request(
                    "POST", f"/v1/conversations/{first}/messages", json={"content": PROMPT + " (hold the only slot)"}
                ),
                stream=True,
            )
            assert held.status_code == 200
            chat = ChatPage(page)
            await chat.sign_in(key, path=f"{base}/#{first}")
            await chat.conversation("Second").click()
            await chat.send("May I have a second answer at once?")
            # Not sent: said in plain words, and the message is back in the box.
            await expect(chat.notice).to_contain_text("Your message was not sent; it is back in the box. You have")
            await expect(chat.notice).to_have_attribute("data-code", "too_many_streams")
            await expect(chat.composer).to_have_value("May I have a second answer at once?")
            await expect(chat.messages.locator(".message")).to_have_count(0)
            await chat.screenshot(SCREENSHOTS / "desktop-too-many-streams.png")
            await held.aclose()

            assert (await erin.delete(f"/v1/conversations/{second}")).status_code == 204
            await page.get_by_role("button", name="Rename “Second”").click()
            await page.get_by_label("New title").fill("Still there?")
            await page.get_by_label("New title").press("Enter")
            await expect(chat.notice).to_contain_text("This conversation no longer exists")
            await expect(chat.notice).to_have_attribute("data-code", "conversation_not_found")
            await expect(chat.conversation("Second")).to_have_count(0)
            await page.get_by_role("button", name="Dismiss").click()
            await expect(chat.notice).to_be_empty()
    finally:
        stack.stop_service(name)


async def test_an_error_event_in_the_stream_is_shown(page: Page) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    # The model list went stale: the server no longer offers what the page picked.
    await page.evaluate(
        """() => document.getElementById("model").append(new Option("retired-model", "retired-model", false, true))"""
    )
    async with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/messages")) as sent:
        await chat.send("Hello, retired model?")
    assert (await sent.value).status == 200, "the error comes as an event in the stream"
    await chat.wait_for_status("failed")
    await expect(chat.last_answer().locator(".meta")).to_contain_text("Failed")
    await expect(chat.last_answer().locator(".meta")).to_contain_text("The model you picked is no longer offered.")
    await expect(chat.notice).to_contain_text("Pick another one in the Model list and send again.")
    await expect(chat.notice).to_have_attribute("data-code", "unknown_model")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
