"""Saved history without the server: the app opens offline (a service worker keeps its files) and
shows the conversations and messages it saved in IndexedDB; back online, it catches up."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, expect

from parley_dev.stack import Stack
from tests.support.api import complete_turn
from tests.support.browser import DEV_KEY, FRANK_KEY, SCREENSHOTS, database_of, saved_in_browser
from tests.support.polling import eventually

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

OFFLINE_NOTE = "Offline — showing saved history"

DATABASES = "async () => (await indexedDB.databases()).map((db) => db.name)"
# The service worker controls the page and keeps every file of the app the page loaded.
SHELL_KEPT = """async () => {
  if (!navigator.serviceWorker.controller) return false;
  const kept = new Set();
  for (const name of await caches.keys()) {
    for (const request of await (await caches.open(name)).keys()) kept.add(new URL(request.url).pathname);
  }
  const loaded = performance.getEntriesByType("resource")
    .map((entry) => new URL(entry.name))
    .filter((url) => url.origin === location.origin && url.pathname.startsWith("/web/"))
    .map((url) => url.pathname);
  return kept.has("/") && loaded.length > 0 && loaded.every((path) => kept.has(path));
}"""


async def saved_texts(api: httpx.AsyncClient, conversation_id: str, want: int = 0) -> list[str]:
    """The conversation's messages as the server has them, oldest first; with `want`, once it
    has that many (an answer is stored just after its stream ends)."""

    async def read() -> list[str]:
        reply = await api.get(f"/v1/conversations/{conversation_id}/messages", params={"limit": 30})
        reply.raise_for_status()
        return [m["content"] for m in reversed(reply.json()["data"])]

    if not want:
        return await read()

    async def enough() -> list[str] | None:
        texts = await read()
        return texts if len(texts) >= want else None

    found: list[str] = await eventually(enough, what=f"{want} messages stored in {conversation_id}")
    return found


async def wait_until_saved(page: Page, key: str, messages: dict[str, int]) -> dict[str, Any]:
    """Until the key's database holds `messages[id]` messages of each conversation."""

    async def check() -> dict[str, Any] | None:
        saved = await saved_in_browser(page, key)
        if saved is None:
            return None
        counts = {cid: sum(m["conversation_id"] == cid for m in saved["messages"]) for cid in messages}
        return saved if counts == messages else None

    found: dict[str, Any] = await eventually(check, what=f"saved messages {messages}")
    return found


async def test_saved_history_reads_offline_and_catches_up_online(
    page: Page, context: BrowserContext, api: httpx.AsyncClient
) -> None:
    first = (await api.post("/v1/conversations", json={"title": "Saved for the train"})).json()["id"]
    await complete_turn(api, first, "What should I read on the train?", max_output_tokens=12)
    second = (await api.post("/v1/conversations", json={"title": "Saved for the plane"})).json()["id"]
    await complete_turn(api, second, "And on the plane?", max_output_tokens=12)
    first_texts = await saved_texts(api, first, want=2)
    second_texts = await saved_texts(api, second, want=2)
    assert len(first_texts) == len(second_texts) == 2

    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{first}")
    await expect(chat.messages.locator(".message .text")).to_have_text(first_texts)
    await chat.conversation("Saved for the plane").click()
    await expect(chat.messages.locator(".message .text")).to_have_text(second_texts)
    await eventually(lambda: page.evaluate(SHELL_KEPT), what="the service worker kept the app's files")
    saved = await wait_until_saved(page, DEV_KEY, {first: 2, second: 2})
    assert DEV_KEY not in repr(saved), "the API key itself is never saved"
    assert database_of(DEV_KEY) in await page.evaluate(DATABASES)

    await context.set_offline(True)
    await page.reload()
    # The app opened without the server, still signed in (the key is in this tab's session).
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator("#connection")).to_have_text("Offline")
    await expect(page.locator("#offline-note")).to_have_text(OFFLINE_NOTE)
    await expect(page.locator("#offline-note")).to_be_visible()
    await expect(page.locator("#conversation-title")).to_have_text("Saved for the plane")
    await expect(chat.messages.locator(".message .text")).to_have_text(second_texts)
    await expect(chat.messages.locator(".message.assistant")).to_have_attribute("data-status", "complete")
    await expect(chat.conversation("Saved for the train")).to_be_visible()
    await chat.screenshot(SCREENSHOTS / "desktop-offline-history.png")

    await chat.conversation("Saved for the train").click()
    await expect(page.locator("#conversation-title")).to_have_text("Saved for the train")
    await expect(chat.messages.locator(".message .text")).to_have_text(first_texts)

    # Sending needs the server: the draft stays.
    await chat.send("Written on the train, sent at the station")
    await expect(chat.notice).to_contain_text("offline")
    await expect(chat.composer).to_have_value("Written on the train, sent at the station")
    await expect(chat.messages.locator(".message")).to_have_count(2)

    # Meanwhile, on another device:
    await api.patch(f"/v1/conversations/{first}", json={"title": "Renamed while you were away"})
    await complete_turn(api, first, "Sent from my phone meanwhile", max_output_tokens=4)

    await context.set_offline(False)
    await expect(page.locator("#connection")).to_have_text("Online")
    await expect(page.locator("#offline-note")).to_be_hidden()
    await expect(chat.conversation("Renamed while you were away")).to_be_visible()
    await expect(page.locator("#conversation-title")).to_have_text("Renamed while you were away")
    await expect(chat.messages.locator(".message.user .text").last).to_have_text("Sent from my phone meanwhile")
    await expect(chat.messages.locator(".message")).to_have_count(4)

    # And the kept draft goes out now.
    await chat.composer.press("Enter")
    await expect(chat.messages.locator(".message.user .text").last).to_have_text(
        "Written on the train, sent at the station"
    )
    await chat.wait_for_status("complete")
    await expect(chat.composer).to_have_value("")


async def test_saved_history_belongs_to_one_key_and_goes_at_sign_out(
    page: Page, context: BrowserContext, stack: Stack, api: httpx.AsyncClient
) -> None:
    mine = (await api.post("/v1/conversations", json={"title": "Only for the dev key"})).json()["id"]
    await complete_turn(api, mine, "A private question", max_output_tokens=4)
    headers = {"Authorization": f"Bearer {FRANK_KEY}"}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=30) as frank:
        franks = (await frank.post("/v1/conversations", json={"title": "Frank's own"})).json()["id"]
        await complete_turn(frank, franks, "Frank asks", max_output_tokens=4)

    dev = ChatPage(page)
    await dev.sign_in(DEV_KEY, path=f"/#{mine}")
    await wait_until_saved(page, DEV_KEY, {mine: 2})

    # Another tab of the same browser, signed in with another key.
    other = await context.new_page()
    frank_chat = ChatPage(other)
    await frank_chat.sign_in(FRANK_KEY, path=f"/#{franks}")
    await wait_until_saved(other, FRANK_KEY, {franks: 2})
    await eventually(lambda: other.evaluate(SHELL_KEPT), what="the service worker kept the app's files")
    frank_saved = await saved_in_browser(other, FRANK_KEY)
    assert frank_saved is not None
    assert mine not in repr(frank_saved) and "Only for the dev key" not in repr(frank_saved)

    await context.set_offline(True)
    await other.reload()
    await expect(other.locator("#offline-note")).to_be_visible()
    await expect(frank_chat.conversation("Frank's own")).to_be_visible()
    await expect(frank_chat.messages.locator(".message.user .text")).to_have_text("Frank asks")
    await expect(frank_chat.conversation("Only for the dev key")).to_have_count(0)
    await context.set_offline(False)
    await expect(other.locator("#connection")).to_have_text("Online")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    await eventually(
        lambda: page.evaluate(f"async () => !(await ({DATABASES})()).includes({database_of(DEV_KEY)!r})"),
        what="signing out deleted the dev key's saved history",
    )
    assert database_of(FRANK_KEY) in await page.evaluate(DATABASES), "the other key's is still there"
    await other.close()
