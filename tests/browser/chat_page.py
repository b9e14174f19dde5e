"""The web client as a user sees it: what the browser tests do and read, by role and label."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

expect.set_options(timeout=20_000)

# Records, in the page, every length the newest answer's text has had (a MutationObserver sees
# each change to the DOM, however briefly it lasted), and every text the message list showed.
RECORDER = """() => {
  window.__lengths = [];
  window.__shown = [];
  const list = document.getElementById("messages");
  const record = () => {
    const answers = list.querySelectorAll(".message.assistant .text");
    const last = answers[answers.length - 1];
    const length = last ? last.textContent.length : 0;
    if (window.__lengths.at(-1) !== length) window.__lengths.push(length);
    window.__shown.push(list.textContent);
  };
  new MutationObserver(record).observe(list, { childList: true, subtree: true, characterData: true });
}"""


def echo(text: str, **directive: Any) -> str:
    """A message that conftest's ECHO_MODEL (or PRICED_MODEL) answers with `text`, word by word."""
    return f"{text}\n[[fake {json.dumps({'echo': True, **directive})}]]"


class ChatPage:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.messages = page.locator("#messages")
        self.composer = page.get_by_label("Message", exact=True)
        self.notice = page.locator("#notice")
        self.conversations = page.get_by_role("navigation", name="Conversations")

    @classmethod
    async def in_new_chat(cls, page: Page, key: str) -> ChatPage:
        """The web client signed in with `key`, in a new (empty) conversation."""
        chat = cls(page)
        await chat.sign_in(key)
        await chat.new_chat()
        return chat

    async def sign_in(self, key: str, path: str = "/") -> None:
        await self.page.goto(path)
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()
        refused = self.page.locator("#sign-in-error").filter(has_text=re.compile(r"\S"))
        await expect(self.page.get_by_role("button", name="Sign out").or_(refused)).to_be_visible()
        assert not await refused.is_visible(), f"sign-in refused: {await refused.text_content()}"
        await expect(self.page.locator("#workspace")).to_have_attribute("aria-busy", "false")

    def conversation(self, title: str) -> Locator:
        return self.conversations.locator("button.open", has_text=title)

    async def new_chat(self) -> None:
        """An empty new conversation (the server has it once its first message is sent)."""
        await self.page.get_by_role("button", name="New conversation").click()
        await expect(self.page.locator("#conversation-title")).to_have_text("New conversation")
        await expect(self.page.locator("#empty")).to_have_text("No messages yet. Ask anything.")
        assert await self.current_conversation_id() == ""

    async def pick_model(self, model: str) -> None:
        await self.page.get_by_role("combobox", name="Model", exact=True).select_option(model)

    async def send(self, text: str) -> None:
        await self.composer.fill(text)
        await self.composer.press("Enter")

    def answers(self) -> Locator:
        return self.messages.locator(".message.assistant")

    def last_answer(self) -> Locator:
        return self.answers().last

    async def answer_text(self) -> str:
        return await self.last_answer().locator(".text").text_content() or ""

    async def wait_for_answer_text(self) -> None:
        """Until the newest answer shows some text (it is streaming)."""
        await expect(self.last_answer().locator(".text")).not_to_have_text("")

    async def wait_for_status(self, status: str) -> None:
        await expect(self.last_answer()).to_have_attribute("data-status", status)

    async def record(self) -> None:
        await self.page.evaluate(RECORDER)

    async def lengths(self) -> list[int]:
        return list(await self.page.evaluate("() => window.__lengths"))

    async def shown(self) -> list[str]:
        return list(await self.page.evaluate("() => window.__shown"))

    async def current_conversation_id(self) -> str:
        return str(await self.page.evaluate("() => decodeURIComponent(location.hash.slice(1))"))

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(path), full_page=True, animations="disabled")

    async def attach(self, *paths: Path) -> None:
        """Pick files with the "Attach image" button's file chooser."""
        async with self.page.expect_file_chooser() as chooser:
            await self.page.get_by_role("button", name="Attach image").click()
        await (await chooser.value).set_files(list(paths))

    def attachments(self) -> Locator:
        """The chips of the images attached to the next message."""
        return self.page.get_by_role("list", name="Attached images").locator("li")


async def image_loaded(image: Locator) -> bool:
    """The <img> has decoded pixels (it did not fail, and is not still loading)."""
    return bool(await image.evaluate("(img) => img.complete && img.naturalWidth > 0"))


# The screen sizes the issue names: a desktop and a phone.
SIZES: dict[str, ViewportSize] = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


async def sized_context(browser: Browser, base_url: str, size: str, dark: bool = False) -> BrowserContext:
    """A fresh browser context at one of SIZES (a phone is touch-first, at twice the pixels)."""
    phone = size == "phone"
    context = await browser.new_context(
        base_url=base_url,
        viewport=SIZES[size],
        color_scheme="dark" if dark else "light",
        device_scale_factor=2 if phone else 1,
        is_mobile=phone,
        has_touch=phone,
    )
    context.set_default_timeout(20_000)
    return context
