"""What can be done to a written message, from the buttons under it: copy it (with the Clipboard
API, and without it), regenerate an answer and switch between its versions (which the
server remembers: a reload shows the version picked), edit a message and send it again, continue
an answer that was stopped (in the same message) or, with a model that cannot continue, be
offered Regenerate instead; a failed answer offers Regenerate too. Images attached to a message
show again after a reload, and saved history offline shows the version that was current."""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import BrowserContext, Locator, Page, expect

from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, ECHO_MODEL, PROMPT, SCREENSHOTS, database_of, saved_in_browser, violations
from tests.support.polling import eventually

from .chat_page import ChatPage, echo, image_loaded

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def button(message: Locator, name: str) -> Locator:
    return message.get_by_role("button", name=name, exact=True)


def copy_button(message: Locator) -> Locator:
    """The Copy button, which says "Copied" for a moment once clicked."""
    return message.get_by_role("button", name=re.compile(r"^(Copy|Copied|Not copied)$"))


def switcher(message: Locator) -> Locator:
    """The version switcher of a message with versions (a group named "Version i of n")."""
    return message.get_by_role("group", name="Version")


def posted(action: str) -> Any:
    return lambda r: r.method == "POST" and r.url.endswith(f"/{action}")


async def messages_in_history(api: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    """The conversation's current path as the server has it, oldest first."""
    reply = await api.get(f"/v1/conversations/{conversation_id}/messages", params={"limit": 50})
    reply.raise_for_status()
    return list(reversed(reply.json()["data"]))


async def echo_chat(page: Page) -> ChatPage:
    """Signed in, in a new conversation on ECHO_MODEL."""
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.pick_model(ECHO_MODEL)
    return chat


async def answered_then_regenerated(chat: ChatPage, first: str) -> None:
    """`first` sent, echoed once, and its answer regenerated: the answer has two versions."""
    await chat.send(echo(first, times=1, key=uuid.uuid4().hex))
    await chat.wait_for_status("complete")
    await button(chat.last_answer(), "Regenerate").click()
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 2 of 2")


async def test_copy_puts_the_message_as_written_on_the_clipboard(page: Page, context: BrowserContext) -> None:
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    chat = await echo_chat(page)
    written = "Two things:\n\n- **bold** first\n- `code` second"
    await chat.send(echo(written))
    await chat.wait_for_status("complete")
    await expect(chat.last_answer().locator(".text strong")).to_have_text("bold")  # shown rendered

    copy = copy_button(chat.last_answer())
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await page.evaluate("() => navigator.clipboard.readText()") == written  # copied as written
    await expect(copy).to_have_text("Copy")  # (for a moment only)
    mine = chat.messages.locator(".message.user").last
    await copy_button(mine).click()
    assert await page.evaluate("() => navigator.clipboard.readText()") == echo(written)


async def test_copy_works_without_the_clipboard_api(page: Page, context: BrowserContext) -> None:
    # A browser without navigator.clipboard (an older one, or a page not served over HTTPS).
    await context.add_init_script("Object.defineProperty(navigator, 'clipboard', { value: undefined });")
    await context.add_init_script(
        "document.addEventListener('copy', () => { window.__copied = String(document.getSelection()); });"
    )
    chat = await echo_chat(page)
    await chat.send(echo("Copied by hand, line one.\nLine two."))
    await chat.wait_for_status("complete")
    copy = copy_button(chat.last_answer())
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await page.evaluate("() => window.__copied") == "Copied by hand, line one.\nLine two."
    await expect(copy).to_be_focused()  # the focus came back from the hidden field


async def test_regenerate_makes_a_new_version_and_the_switcher_shows_either(page: Page, api: httpx.AsyncClient) -> None:
    chat = await echo_chat(page)
    # Echoed the first time only: the regenerated answer is the model's own (other) words.
    first = "Version one of the answer."
    await chat.send(echo(first, times=1, key=uuid.uuid4().hex))
    await chat.wait_for_status("complete")
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await expect(switcher(chat.last_answer())).to_have_count(0)  # one version: no switcher
    conversation = await chat.current_conversation_id()

    async with page.expect_request(posted("regenerate")) as regenerate:
        await button(chat.last_answer(), "Regenerate").click()
    assert (await regenerate.value).post_data_json["client_request_id"]
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 2 of 2")
    await expect(chat.answers()).to_have_count(1)  # the new version in the old one's place
    second = await chat.answer_text()
    assert second and second != first
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    history = await messages_in_history(api, conversation)
    assert [m["content"] for m in history][1] == second
    await chat.screenshot(SCREENSHOTS / "desktop-versions.png")

    previous = button(chat.last_answer(), "Previous version of this answer")
    async with page.expect_request(lambda r: r.method == "PUT" and r.url.endswith("/current")):
        await previous.click()
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 1 of 2")
    await expect(button(chat.last_answer(), "Next version of this answer")).to_be_focused()
    await expect(previous).to_be_disabled()
    assert [m["content"] for m in await messages_in_history(api, conversation)][1] == first

    # The server keeps the version picked: a reload shows it.
    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await expect(switcher(chat.last_answer())).to_contain_text("1/2")
    await button(chat.last_answer(), "Next version of this answer").click()
    await expect(chat.last_answer().locator(".text")).to_have_text(second)
    await expect(switcher(chat.last_answer())).to_contain_text("2/2")
    found = await violations(page)
    assert not found, found


async def test_a_reload_while_an_answer_is_regenerated_picks_it_up(page: Page) -> None:
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    await chat.new_chat()  # the demo model: slow enough to reload mid-answer
    await chat.send("Tell me, in a few friendly sentences, why the sea has tides")
    await chat.wait_for_status("complete")
    await button(chat.last_answer(), "Regenerate").click()
    await chat.wait_for_status("streaming")
    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    await chat.wait_for_status("complete")
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 2 of 2")
    await expect(chat.answers()).to_have_count(1)
    await expect(chat.messages.locator(".message.user")).to_have_count(1)


async def test_a_version_picked_on_another_device_shows_here(
    page: Page, context: BrowserContext, api: httpx.AsyncClient
) -> None:
    chat = await echo_chat(page)
    first = "The version another device picks."
    await answered_then_regenerated(chat, first)
    conversation = await chat.current_conversation_id()
    versions = (await messages_in_history(api, conversation))[1]["versions"]
    assert versions["count"] == 2, versions
    reply = await api.put(f"/v1/conversations/{conversation}/current", json={"message_id": versions["ids"][0]})
    assert reply.status_code == 200, reply.text

    # Sync brings it (at once when the connection comes back).
    await context.set_offline(True)
    await expect(page.locator("#connection")).to_have_text("Offline")
    await context.set_offline(False)
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 1 of 2")


async def test_edit_and_send_again_makes_a_new_version_of_the_message_and_its_answer(
    page: Page, api: httpx.AsyncClient
) -> None:
    chat = await echo_chat(page)
    before = echo("The first wording of my question.")
    await chat.send(before)
    await chat.wait_for_status("complete")
    mine = chat.messages.locator(".message.user").last

    # Escape (or Cancel) leaves the message as it was.
    await button(mine, "Edit").click()
    editor = mine.get_by_role("textbox", name="Edit your message")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value(before)
    await editor.fill("never sent")
    await editor.press("Escape")
    await expect(editor).to_have_count(0)
    await expect(mine.locator(".text")).to_have_text(before)
    await expect(button(mine, "Edit")).to_be_focused()
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")  # (Escape stopped nothing)

    await button(mine, "Edit").click()
    await expect(editor).to_be_focused()
    after = echo("The second wording, after the edit.")
    await editor.fill(after)
    found = await violations(page)
    await chat.screenshot(SCREENSHOTS / "desktop-editing.png")
    async with page.expect_request(posted("edit")) as edit:
        await button(mine, "Send").click()
    assert (await edit.value).post_data_json["content"] == after
    await expect(chat.last_answer().locator(".text")).to_have_text("The second wording, after the edit.")
    await expect(chat.messages.locator(".message")).to_have_count(2)
    mine = chat.messages.locator(".message.user").last
    await expect(mine.locator(".text")).to_have_text(after)
    await expect(switcher(mine)).to_have_accessible_name("Version 2 of 2")
    conversation = await chat.current_conversation_id()
    assert (await messages_in_history(api, conversation))[0]["content"] == after

    await button(mine, "Previous version of this message").click()
    await expect(mine.locator(".text")).to_have_text(before)
    await expect(chat.last_answer().locator(".text")).to_have_text("The first wording of my question.")
    await expect(switcher(mine)).to_have_accessible_name("Version 1 of 2")
    assert not found, found


async def test_a_stopped_answer_continues_in_the_same_message(page: Page, api: httpx.AsyncClient) -> None:
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    await chat.new_chat()  # the demo model, which can continue
    await chat.send(PROMPT + " (stop, then continue)")
    await chat.wait_for_answer_text()
    await page.get_by_role("button", name="Stop").click()
    await chat.wait_for_status("interrupted")
    partial = await chat.answer_text()
    answer_id = await chat.last_answer().get_attribute("data-id")
    continue_button = button(chat.last_answer(), "Continue")

    async with page.expect_request(posted("continue")):
        await continue_button.click()
    await chat.wait_for_status("complete")
    await expect(chat.answers()).to_have_count(1)
    await expect(chat.last_answer()).to_have_attribute("data-id", str(answer_id))
    whole = await chat.answer_text()
    assert whole.startswith(partial.rstrip()) and len(whole) > len(partial), (partial, whole)
    await expect(continue_button).to_have_count(0)  # complete now
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["id"] == answer_id and saved["content"] == whole


async def test_a_model_that_cannot_continue_offers_regenerate(page: Page) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.pick_model(ECHO_MODEL)  # an OpenAI-style provider: it cannot go on from a partial answer
    await chat.send(echo("Cut short at the length limit.", finish_reason="length", times=1, key=uuid.uuid4().hex))
    await chat.wait_for_status("complete")
    continue_button = button(chat.last_answer(), "Continue")
    await continue_button.click()
    await expect(chat.notice).to_contain_text("This model cannot continue a cut-off answer")
    await expect(chat.notice).to_have_attribute("data-code", "continue_unsupported")
    await expect(continue_button).to_have_count(0)
    regenerate = button(chat.last_answer(), "Regenerate")
    await expect(regenerate).to_be_focused()
    await expect(chat.last_answer().locator(".text")).to_have_text("Cut short at the length limit.")  # unchanged

    await regenerate.click()
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 2 of 2")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")


async def test_a_failed_answer_offers_regenerate(page: Page) -> None:
    chat = await echo_chat(page)
    await chat.send(echo("Refused once by the provider.", status=400, times=1, key=uuid.uuid4().hex))
    await chat.wait_for_status("failed")
    await expect(button(chat.last_answer(), "Continue")).to_have_count(0)  # nothing to go on from
    await button(chat.last_answer(), "Regenerate").click()
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 2 of 2")
    await expect(chat.last_answer()).to_have_attribute("data-status", "complete")
    assert await chat.answer_text()


def small_photo(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), "teal").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


async def test_attached_images_show_again_after_a_reload(page: Page, tmp_path: Path) -> None:
    chat = await echo_chat(page)
    await chat.attach(small_photo(tmp_path / "teal.png"))
    await expect(chat.attachments().first).to_contain_text("Uploaded")
    await chat.send(echo("What colour is this?"))
    await chat.wait_for_status("complete")
    await expect(chat.messages.locator(".message.user").get_by_role("img")).to_have_count(1)

    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    await expect(chat.messages.locator(".message.user .text")).to_have_text(echo("What colour is this?"))
    thumbnail = chat.messages.locator(".message.user").get_by_role("img", name="Attached image 1")
    await expect(thumbnail).to_be_visible()
    await eventually(lambda: image_loaded(thumbnail), what="the attached image from history loaded")
    await expect(chat.messages.locator(".media-missing")).to_have_count(0)

    # Edited and sent again, the message keeps its image.
    mine = chat.messages.locator(".message.user").last
    await button(mine, "Edit").click()
    await mine.get_by_role("textbox", name="Edit your message").fill(echo("And now, what colour?"))
    async with page.expect_request(posted("edit")) as edit:
        await button(mine, "Send").click()
    media_id = await thumbnail.get_attribute("data-media-id")
    assert (await edit.value).post_data_json["media_ids"] == [media_id]
    await expect(switcher(chat.messages.locator(".message.user").last)).to_have_accessible_name("Version 2 of 2")
    await expect(chat.messages.locator(".message.user").get_by_role("img", name="Attached image 1")).to_be_visible()


async def test_saved_history_offline_shows_the_current_version(
    page: Page, context: BrowserContext, api: httpx.AsyncClient
) -> None:
    chat = await echo_chat(page)
    first = "The answer I will want offline."
    await answered_then_regenerated(chat, first)
    await button(chat.last_answer(), "Previous version of this answer").click()
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    conversation = await chat.current_conversation_id()
    current = (await api.get(f"/v1/conversations/{conversation}")).json()["current_message_id"]
    assert current == await chat.last_answer().get_attribute("data-id")

    async def both_versions_saved() -> bool:
        saved = await saved_in_browser(page, DEV_KEY)
        if saved is None:
            return False
        mine = [m for m in saved["messages"] if m["conversation_id"] == conversation]
        row = next((r for r in saved["conversations"] if r["id"] == conversation), None)
        return (
            sum(m["role"] == "assistant" for m in mine) == 2
            and row is not None
            and row["conversation"].get("current_message_id") == current
        )

    await eventually(both_versions_saved, what=f"both versions saved in {database_of(DEV_KEY)}")
    await context.set_offline(True)
    await page.reload()
    await expect(page.locator("#offline-note")).to_be_visible()
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await expect(chat.answers()).to_have_count(1)
    await expect(switcher(chat.last_answer())).to_have_accessible_name("Version 1 of 2")
    # Switching needs the server: said plainly, nothing changes.
    await button(chat.last_answer(), "Next version of this answer").click()
    await expect(chat.notice).to_have_attribute("data-code", "network_error")
    await expect(chat.last_answer().locator(".text")).to_have_text(first)
    await context.set_offline(False)
