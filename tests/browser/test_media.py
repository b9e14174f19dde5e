"""Images: attaching a photo (downscaled in the browser, uploaded with a progress bar), a picture
drawn by the image generator shown in the answer (live, and again from history), and a file
that is not an image refused before anything is uploaded."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.async_api import Page, Request, Route, expect

from parley_dev.stack import Stack, origin_of
from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage, image_loaded

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Every value the upload progress bars take, recorded in the page as it changes.
PROGRESS_RECORDER = """() => {
  window.__progress = [];
  const list = document.getElementById("attachment-list");
  const record = () => {
    for (const bar of list.querySelectorAll("progress[value]")) {
      const value = Number(bar.getAttribute("value"));
      if (window.__progress.at(-1) !== value) window.__progress.push(value);
    }
  };
  new MutationObserver(record).observe(list, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["value"],
  });
}"""
# Upload bandwidth (bytes/s) while the photo goes up: on loopback it would be gone in a blink.
UPLOAD_BYTES_PER_S = 250_000


def is_upload(request: Request) -> bool:
    return request.method == "POST" and request.url.endswith("/v1/media")


def large_photo(path: Path) -> Path:
    """A 4000x3000 JPEG of a few MB (gradients under noise, so it does not compress to nothing)."""
    size = (4000, 3000)
    gradient = Image.linear_gradient("L").resize(size)
    channels = [
        Image.blend(gradient.rotate(90 * i).resize(size), Image.effect_noise(size, 60 + 10 * i), 0.35) for i in range(3)
    ]
    Image.merge("RGB", channels).save(path, "JPEG", quality=80)
    return path


async def test_a_large_photo_is_downscaled_and_uploads_with_visible_progress(
    page: Page, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    photo = large_photo(tmp_path / "holiday.jpg")
    assert photo.stat().st_size > 2_000_000
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await page.evaluate(PROGRESS_RECORDER)
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": UPLOAD_BYTES_PER_S},
    )
    send = page.get_by_role("button", name="Send")
    progress = page.get_by_role("progressbar", name="Upload of holiday.jpg")

    async with page.expect_response(lambda r: is_upload(r.request)) as uploaded:
        await chat.attach(photo)
        await expect(chat.attachments()).to_have_count(1)
        await chat.composer.fill("What is in this photo?")
        await expect(progress).to_be_visible()
        await expect(send).to_be_disabled()  # the message waits for its image

        async def part_way() -> bool:
            value = float(await progress.get_attribute("value") or 0)
            return 0 < value < 100

        await eventually(part_way, what="the progress bar part way")
        await expect(chat.attachments().first).to_contain_text("%")
        await chat.screenshot(SCREENSHOTS / "desktop-image-uploading.png")
    reply = await uploaded.value
    assert reply.status == 201, await reply.text()
    media = await reply.json()
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    values = list(await page.evaluate("() => window.__progress"))
    assert any(0 < v < 100 for v in values), f"no value between 0 and 100: {values}"
    assert values == sorted(values) and values[-1] == 100, f"the bar went back or stopped short: {values}"
    # Downscaled in the browser: what reached the server is at most 2048 px and much smaller.
    stored = (await api.get(f"/v1/media/{media['id']}")).json()
    assert max(stored["width"], stored["height"]) == 2048 and stored["height"] <= 2048, stored
    assert stored["size_bytes"] < photo.stat().st_size, stored
    await expect(chat.attachments().first).to_contain_text("Uploaded")
    await expect(progress).to_be_hidden()
    await expect(send).to_be_enabled()

    async with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/messages")) as sent:
        await send.click()
    assert (await sent.value).post_data_json["media_ids"] == [media["id"]]
    await expect(chat.attachments()).to_have_count(0)
    thumbnail = chat.messages.locator(".message.user").last.get_by_role("img", name="Attached image: holiday.jpg")
    await expect(thumbnail).to_be_visible()
    await eventually(lambda: image_loaded(thumbnail), what="the sent photo's thumbnail loaded")
    await chat.wait_for_status("complete")
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"], saved
    await chat.screenshot(SCREENSHOTS / "desktop-image-sent.png")


async def test_a_generated_image_is_shown_in_the_answer_and_again_after_a_reload(
    page: Page, stack: Stack, api: httpx.AsyncClient
) -> None:
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.send("/image a red bicycle")
    await chat.wait_for_status("complete")
    picture = chat.last_answer().get_by_role("img", name="a red bicycle")
    await expect(picture).to_be_visible()
    await eventually(lambda: image_loaded(picture), what="the generated image loaded")
    # Its box has the picture's size before the bytes arrive.
    assert int(await picture.get_attribute("width") or 0) > 0 and int(await picture.get_attribute("height") or 0) > 0
    await chat.screenshot(SCREENSHOTS / "desktop-generated-image.png")

    saved = await saved_answer(api, await chat.current_conversation_id())
    media_id = str(await picture.get_attribute("data-media-id"))
    assert media_id in saved["content"]

    # After a reload the answer comes from history: its text names the media, whose URL is
    # fetched. That URL failing once (an expired one) makes the page ask for a fresh one.
    image_requests: list[str] = []

    async def fail_first(route: Route) -> None:
        image_requests.append(route.request.url)
        if len(image_requests) == 1:
            await route.fulfill(status=403, body="Request has expired")
        else:
            await route.continue_()

    assert stack.s3 is not None
    await page.route(f"{origin_of(stack.s3.url)}/**", fail_first)
    lookups: list[dict[str, Any]] = []

    async def looked_up(response: Any) -> None:
        if response.request.method == "GET" and response.url.endswith(f"/v1/media/{media_id}"):
            lookups.append(json.loads(await response.text()))

    page.on("response", looked_up)
    await page.reload()
    await expect(page.locator("#workspace")).to_have_attribute("aria-busy", "false")
    picture = chat.last_answer().get_by_role("img", name="a red bicycle")
    await expect(picture).to_be_visible()
    await eventually(lambda: image_loaded(picture), what="the image from history loaded")
    assert len(image_requests) >= 2, image_requests
    assert len(lookups) == 2, f"one lookup, then one fresh URL after the failure: {len(lookups)}"
    await expect(chat.messages.locator(".media-missing")).to_have_count(0)


async def test_a_file_that_is_not_an_image_is_refused_and_not_uploaded(page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n")
    huge = tmp_path / "poster.png"
    with huge.open("wb") as out:
        out.truncate(21_000_000)
    chat = ChatPage(page)
    uploads: list[Request] = []
    page.on("request", lambda request: uploads.append(request) if is_upload(request) else None)
    await chat.sign_in(DEV_KEY)
    await chat.new_chat()

    await chat.attach(notes, huge)
    refusal = page.locator("#attach-message")
    await expect(refusal).to_be_visible()
    await expect(refusal).to_contain_text("“notes.txt” is not an image")
    await expect(refusal).to_contain_text("“poster.png” is 21.0 MB: images may be at most 20.0 MB")
    await expect(chat.attachments()).to_have_count(0)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await chat.screenshot(SCREENSHOTS / "desktop-image-refused.png")

    # An image dropped on the composer after that is attached, and the refusal goes away.
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    dropped = await page.evaluate_handle(
        """(b64) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const data = new DataTransfer();
          data.items.add(new File([bytes], "dot.png", { type: "image/png" }));
          return data;
        }""",
        base64.b64encode(buffer.getvalue()).decode(),
    )
    await page.locator("#composer").dispatch_event("drop", {"dataTransfer": dropped})
    await expect(chat.attachments().first).to_contain_text("Uploaded · 64\u00d748")
    await expect(refusal).to_be_hidden()
    assert len(uploads) == 1 and b"notes.txt" not in (uploads[0].post_data_buffer or b"")
