"""The draft is never lost: a message the estimate already refuses cannot be sent (and says why),
a message the server refuses goes back in the box, an image that did not upload says what to
do, and every error the API can return reads as a plain sentence with a next step."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.async_api import BrowserContext, Page, Request, expect

from parley_dev.stack import Stack
from tests.support.browser import DEV_KEY, PENNY_KEY, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).parents[2]
TOO_LONG = "This message is too long to send (at most 32,000 characters). Shorten it or send it in parts."
NOT_SENT = "Your message was not sent; it is back in the box. "
BUDGET_USED = (
    "You have used up this month's budget. It renews at the start of next month; "
    "ask your administrator if you need more now."
)


def record_writes(page: Page) -> list[str]:
    """ "METHOD path" of every request the page makes that would change something on the server."""
    writes: list[str] = []

    def on_request(request: Request) -> None:
        path = request.url.split("://", 1)[1].split("/", 1)[1]
        if request.method != "GET" and not path.startswith("v1/tokens/count"):
            writes.append(f"{request.method} /{path}")

    page.on("request", on_request)
    return writes


async def test_a_draft_the_estimate_refuses_cannot_be_sent_and_stays(page: Page) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    writes = record_writes(page)
    draft = "forty-five thousand characters " * 1_452  # the size of a pasted log file
    assert len(draft) > 45_000
    await chat.composer.fill(draft)
    send = page.get_by_role("button", name="Send")
    await expect(page.locator("#estimate")).to_have_text(TOO_LONG)
    await expect(send).to_be_disabled()
    await expect(send).to_have_accessible_description(TOO_LONG)
    await chat.screenshot(SCREENSHOTS / "desktop-too-long-to-send.png")

    await chat.composer.press("Enter")
    await expect(chat.composer).to_have_value(draft)
    assert await chat.messages.locator(".message").count() == 0
    assert writes == [], "nothing was sent, nothing was created or renamed"
    assert await chat.current_conversation_id() == ""

    # Shortened, it goes.
    await chat.composer.fill("A short question instead")
    await expect(send).to_be_enabled()
    await expect(page.locator("#estimate")).to_contain_text("tokens")


async def test_a_refused_message_goes_back_in_the_box_and_names_nothing(page: Page, stack: Stack) -> None:
    chat = ChatPage(page)
    await chat.sign_in(PENNY_KEY)
    await expect(page.locator("#budget")).to_have_text("0 tokens left this month")
    await chat.new_chat()
    writes = record_writes(page)
    text = "Plan the team offsite for next spring, please"
    await chat.send(text)

    await expect(chat.notice).to_have_text(NOT_SENT + BUDGET_USED)
    await expect(chat.notice).to_have_attribute("data-code", "user_budget_exceeded")
    await expect(chat.composer).to_have_value(text)
    await expect(chat.messages.locator(".message")).to_have_count(0)
    await expect(page.get_by_text("Not sent", exact=True)).to_have_count(0)
    await chat.screenshot(SCREENSHOTS / "desktop-message-refused.png")
    # The conversation was created for the message; it is not named after a message never sent.
    conversation = await chat.current_conversation_id()
    assert writes[0] == "POST /v1/conversations" and not any(w.startswith("PATCH") for w in writes), writes
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {PENNY_KEY}"}, timeout=30
    ) as penny:
        assert (await penny.get(f"/v1/conversations/{conversation}")).json()["title"] == ""
    await expect(page.locator("#conversation-title")).to_have_text("Untitled")
    await expect(chat.conversations.locator("button.open")).to_have_text(["Untitled"])

    # Tried again (Enter): refused again, the draft there once, not twice.
    await page.get_by_role("button", name="Dismiss").click()
    await chat.composer.press("Enter")
    await expect(chat.notice).to_have_text(NOT_SENT + BUDGET_USED)
    await expect(chat.composer).to_have_value(text)
    assert [w for w in writes if w.endswith("/messages")] == [f"POST /v1/conversations/{conversation}/messages"] * 2


async def test_an_image_that_did_not_upload_says_to_remove_or_retry(
    page: Page, context: BrowserContext, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture, whatever its name says\n" * 20)
    dot = tmp_path / "dot.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    dot.write_bytes(buffer.getvalue())
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.composer.fill("What is in this picture?")
    send = page.get_by_role("button", name="Send")
    message = page.locator("#attach-message")

    # Refused by the server for good: remove it.
    await chat.attach(broken)
    chip = chat.attachments().first
    await expect(chip).to_contain_text(
        "Not uploaded. This kind of file is not supported. Attach a JPEG, PNG, WebP, GIF, HEIC or AVIF image instead."
    )
    await expect(message).to_have_text("“broken.png” cannot be sent. Remove it to send your message.")
    await expect(send).to_be_disabled()
    await expect(send).to_have_accessible_description(await message.text_content() or "")
    await expect(chip.get_by_role("button", name="Retry broken.png")).to_be_hidden()
    await expect(page.locator("#composer")).not_to_contain_text("unsupported_media_type")
    await chat.screenshot(SCREENSHOTS / "desktop-image-not-uploaded.png")
    await chip.get_by_role("button", name="Remove broken.png").click()
    await expect(chat.attachments()).to_have_count(0)
    await expect(message).to_be_hidden()
    await expect(send).to_be_enabled()

    # Lost on the way (offline): retry it.
    await context.set_offline(True)
    await chat.attach(dot)
    await expect(chip).to_contain_text("Not uploaded. Parley cannot be reached. Check your connection")
    await expect(message).to_have_text(
        "“dot.png” did not upload. Retry it, or remove it to send your message without it."
    )
    await expect(send).to_be_disabled()
    await context.set_offline(False)
    await chip.get_by_role("button", name="Retry dot.png").click()
    await expect(chip).to_contain_text("Uploaded · 64\u00d748")
    await expect(message).to_be_hidden()
    await expect(send).to_be_enabled()
    await expect(chat.composer).to_have_value("What is in this picture?")


def api_error_codes() -> set[str]:
    """Every error code a service can give a client: typed errors' codes, stream failures and
    notices, and the maps from other errors (validation, HTTP statuses, provider failures)."""
    sources = [
        *ROOT.glob("services/*/parley_*/**/*.py"),
        *ROOT.glob("libs/common/parley_common/**/*.py"),
    ]
    codes: set[str] = set()
    for path in sources:
        text = path.read_text()
        codes |= set(re.findall(r'\bcode\s*=\s*"([a-z][a-z0-9_]*)"', text))
        # (a provider error's class attribute: parley_worker/providers/errors.py)
        codes |= set(re.findall(r'\bclient_code(?:\s*:\s*ClassVar\[str\])?\s*=\s*"([a-z][a-z0-9_]*)"', text))
        codes |= set(re.findall(r'\.fail\(\s*"([a-z][a-z0-9_]*)"', text))
        codes |= set(re.findall(r'Notice\(\s*\w+,\s*\w+,\s*"([a-z][a-z0-9_]*)"', text))
        codes |= set(re.findall(r'_CODES\.get\([^()]*(?:\([^()]*\))?[^()]*,\s*"([a-z][a-z0-9_]*)"\)', text))
        for found in re.finditer(r"^\w*_CODES = \{", text, re.M):
            codes |= set(re.findall(r':\s*"([a-z][a-z0-9_]*)"', text[found.end() : text.index("}", found.end())]))
    return codes


SENTENCES = """async (codes) => {
  const { ERROR_TEXT, plainError } = await import("/web/errors.js");
  const message = "content is longer than 32000 characters";
  return Object.fromEntries(codes.map((code) => [
    code, Object.hasOwn(ERROR_TEXT, code) ? plainError({ status: 400, code, message }) : null,
  ]));
}"""


async def test_every_error_code_of_the_api_reads_as_a_plain_sentence(page: Page) -> None:
    codes = api_error_codes()
    # The scan finds what it should (it would pass vacuously otherwise).
    assert {"too_many_streams", "unsupported_media_type", "provider_overloaded", "invalid_json", "not_found"} <= codes
    assert {"stream_timeout", "worker_lost", "gateway_shutdown", "conversation_busy"} <= codes
    codes.add("network_error")  # the page's own: the server could not be reached
    assert len(codes) > 60, sorted(codes)
    await page.goto("/")
    texts = await page.evaluate(SENTENCES, sorted(codes))
    missing = sorted(code for code, text in texts.items() if text is None)
    assert missing == [], f"error codes without a sentence in web/errors.js: {missing}"
    for code, text in texts.items():
        assert code not in text and not re.search(r"\b[a-z]+_[a-z_]+\b", text), f"{code}: a code shows: {text}"
        assert text[0].isupper() and text.endswith("."), f"{code}: not a sentence: {text}"
        # What happened, then what to do.
        assert len(re.findall(r"[.!?](?:\s|$)", text)) >= 2, f"{code}: no next step: {text}"
    assert "32,000 characters" in texts["content_too_long"]
