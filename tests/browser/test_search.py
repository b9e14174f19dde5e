"""Finding things: the sidebar's search box (titles and message text, GET
/v1/conversations/search) and the conversation list grouped by date."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta

import httpx
import pytest
from playwright.async_api import Page, Route, expect

from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]


async def test_search_finds_conversations_by_title_and_by_message_text(page: Page, api: httpx.AsyncClient) -> None:
    word = "quokka" + secrets.token_hex(3)  # in nothing but what this test writes
    titled = (await api.post("/v1/conversations", json={"title": f"Trip notes {word}"})).json()["id"]
    texted = (await api.post("/v1/conversations", json={"title": "Animals of Rottnest"})).json()["id"]
    await complete_turn(api, texted, f"Tell me about the {word} and its famous smile", max_output_tokens=4)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/v1/conversations/search" in r.url else None)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    search = page.get_by_role("searchbox", name="Search conversations")

    await search.press_sequentially(word[:-1], delay=10)
    await search.press_sequentially(word[-1])
    results = page.get_by_role("list", name="Search results").get_by_role("button")
    await expect(results).to_have_count(2)
    assert len(asked) < len(word), "asked once the typing paused, not per key"
    assert asked[-1].endswith(f"q={word}&limit=20")
    await expect(page.locator("#search-status")).to_have_text("2 conversations found")
    await expect(chat.conversations.locator(".conversation-list")).to_be_hidden()
    by_title = results.filter(has_text=f"Trip notes {word}")
    by_text = results.filter(has_text="Animals of Rottnest")
    await expect(by_text).to_contain_text(f"{word} and its famous smile")
    await chat.screenshot(SCREENSHOTS / "desktop-search.png")

    # A hit in a message opens its conversation there.
    await by_text.click()
    await expect(page.locator("#conversation-title")).to_have_text("Animals of Rottnest")
    assert await chat.current_conversation_id() == texted
    matched = chat.messages.locator(".message.found")
    await expect(matched).to_have_count(1)
    await expect(matched).to_contain_text(word)
    await by_title.click()
    assert await chat.current_conversation_id() == titled

    # Nothing found says so; Escape brings the list back.
    await search.fill(word + "-nowhere")
    await expect(page.locator("#search-status")).to_have_text(f"No conversation contains “{word}-nowhere”.")
    await expect(results).to_have_count(0)
    await search.press("Escape")
    await expect(search).to_have_value("")
    await expect(chat.conversations.locator(".conversation-list")).to_be_visible()
    await expect(chat.conversation(f"Trip notes {word}")).to_be_visible()

    # At a phone's size, in the drawer.
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("button", name="Conversations", exact=True).click()
    await search.fill(word)
    await expect(results).to_have_count(2)
    await chat.screenshot(SCREENSHOTS / "phone-search.png")
    await by_title.click()
    await expect(chat.conversations).to_be_hidden()
    await expect(page.locator("#conversation-title")).to_have_text(f"Trip notes {word}")


# Where conversations last active at these times are listed, seen on 15 March 2026 at 18:30.
GROUPS = """() => import("/web/conversations.js").then(({ dateGroup }) => {
  const at = (y, m, d, h = 12) => new Date(y, m - 1, d, h).getTime();
  const today = new Date(2026, 2, 15, 18, 30);
  return [
    at(2026, 3, 15, 0), at(2026, 3, 14, 23), at(2026, 3, 14, 0), at(2026, 3, 13, 9), at(2026, 3, 8, 9),
    at(2026, 3, 7, 9), at(2026, 2, 14, 9), at(2026, 2, 13, 9), at(2026, 1, 2, 9), at(2025, 12, 31, 9),
  ].map((ms) => dateGroup(ms, today));
})"""


async def test_typing_in_the_search_box_while_a_found_conversation_loads_keeps_the_keys_there(
    page: Page, api: httpx.AsyncClient
) -> None:
    word = "wombat" + secrets.token_hex(3)
    found = (await api.post("/v1/conversations", json={"title": f"Burrows {word}"})).json()["id"]
    await complete_turn(api, found, "Where do wombats sleep?", max_output_tokens=4)
    await api.post("/v1/conversations", json={"title": "Opened at sign-in"})  # the newest, so not `found`
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    loading = asyncio.Event()
    release = asyncio.Event()

    async def slow_history(route: Route) -> None:
        loading.set()
        await release.wait()
        await route.continue_()

    await page.route(f"**/v1/conversations/{found}/messages*", slow_history)
    search = page.get_by_role("searchbox", name="Search conversations")
    await search.fill(word)
    await page.get_by_role("list", name="Search results").get_by_role("button", name=f"Burrows {word}").click()
    await asyncio.wait_for(loading.wait(), 20)
    # The user goes back to the search box while the conversation's history is on its way.
    await search.click()
    await search.press("End")
    await page.keyboard.type(" tunnels")
    release.set()
    await expect(chat.messages.locator(".message")).to_have_count(2)
    await page.keyboard.type(" deep")
    await expect(search).to_have_value(f"{word} tunnels deep")
    await expect(search).to_be_focused()
    await expect(chat.composer).to_have_value("")


async def test_the_list_is_grouped_by_date(page: Page, api: httpx.AsyncClient) -> None:
    await page.goto("/")
    assert await page.evaluate(GROUPS) == [
        "Today",
        "Yesterday",
        "Yesterday",
        "Previous 7 days",
        "Previous 7 days",
        "Previous 30 days",
        "Previous 30 days",
        "Previous 30 days",
        "January",
        "December 2025",
    ]

    # The real list: what was active today is under "Today"; seen from tomorrow, under "Yesterday".
    title = "Grouped " + secrets.token_hex(3)
    await api.post("/v1/conversations", json={"title": title})
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    group = chat.conversations.get_by_role("list", name="Today")
    await expect(group.get_by_role("button", name=title, exact=True)).to_be_visible()
    await expect(chat.conversations.get_by_role("heading").first).to_have_text("Today")
    await chat.screenshot(SCREENSHOTS / "desktop-grouped-by-date.png")

    await page.clock.set_fixed_time(datetime.now() + timedelta(days=1))
    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    group = chat.conversations.get_by_role("list", name="Yesterday")
    await expect(group.get_by_role("button", name=title, exact=True)).to_be_visible()
    await expect(chat.conversations.get_by_role("heading", name="Today")).to_have_count(0)
