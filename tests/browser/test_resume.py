"""A stream outlives its connection: the page resumes after the gateway goes away, and after a reload."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from playwright.async_api import Page, Request, expect

from parley_dev.stack import Stack
from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, PROMPT, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.mark.parametrize("drop", ["stop", "kill"])
async def test_a_dropped_connection_resumes_by_itself_without_repeating_text(
    page: Page, stack: Stack, api: httpx.AsyncClient, drop: str
) -> None:
    resumed_after: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/events"):
            resumed_after.append(request.headers.get("last-event-id", ""))

    page.on("request", on_request)
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.record()
    await chat.send(PROMPT + f" ({drop} the gateway)")
    await chat.wait_for_answer_text()
    try:
        if drop == "stop":
            # SIGTERM: the gateway ends the stream with a retryable notice, then exits.
            assert await asyncio.to_thread(stack.stop_service, "gateway") == 0
        else:
            # SIGKILL: the connection just breaks.
            await asyncio.to_thread(stack.kill_service, "gateway")
        await chat.wait_for_status("reconnecting")
        await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    finally:
        if "gateway" not in stack.processes:
            stack.start_service("gateway")
        await stack.wait_ready()

    await chat.wait_for_status("complete")
    await expect(page.locator("#connection")).to_have_text("Online")
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert await chat.answer_text() == saved["content"], "every token once, none twice"
    lengths = await chat.lengths()
    assert lengths == sorted(lengths), f"the answer's text shrank or was replaced: {lengths}"
    assert resumed_after, "the page resumed with GET /v1/responses/{id}/events"
    assert all(last_id.isdigit() and int(last_id) > 0 for last_id in resumed_after), resumed_after


async def test_a_reload_mid_stream_picks_the_answer_up_again(page: Page, api: httpx.AsyncClient) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.send(PROMPT + " (reload now)")
    await chat.wait_for_answer_text()
    await page.reload()

    await expect(chat.messages.locator(".message.user")).to_have_count(1)
    await chat.wait_for_answer_text()  # the answer shows again, and goes on
    await chat.screenshot(SCREENSHOTS / "desktop-resumed.png")
    await chat.wait_for_status("complete")
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert await chat.answer_text() == saved["content"]
    await expect(chat.answers()).to_have_count(1)
