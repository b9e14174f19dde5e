"""Layout at a desktop (1440x900) and a phone (390x844) size: wide content scrolls in its own box
and never widens the message column; the rename box is wide enough to type in."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page, ViewportSize, expect

from tests.support.browser import DEV_KEY, ECHO_MODEL, SCREENSHOTS

from .chat_page import ChatPage, echo

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP: ViewportSize = {"width": 1440, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

LONG_LINE = "result = compute(" + ", ".join(f"argument_{n:02d}" for n in range(30)) + ")"
HEADERS = ["Temperature", "Precipitation", "Humidity", "Visibility", "Barometric", "Windchill", "Sunshine"]
WIDE = f"""A wide answer.

```python
{LONG_LINE}
```

| {" | ".join(HEADERS)} |
|{"|".join("---" for _ in HEADERS)}|
| {" | ".join("12.5" for _ in HEADERS)} |

The end."""

# Where every message, code block and table is, against the message column and the window.
MEASURE = """() => {
  const box = (node) => node.getBoundingClientRect();
  const column = box(document.getElementById("messages"));
  const scroller = document.getElementById("scroller");
  const scrollerBox = box(scroller);
  return {
    page: { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth },
    scroller: { scrollWidth: scroller.scrollWidth, clientWidth: scroller.clientWidth, right: scrollerBox.right },
    column: { left: column.left, right: column.right, width: column.width },
    messages: [...document.querySelectorAll("#messages .message")].map((node) => {
      const b = box(node);
      return { left: b.left, right: b.right, width: b.width };
    }),
    boxes: [...document.querySelectorAll("#messages pre, #messages .table-scroller")].map((node) => ({
      kind: node.tagName === "PRE" ? "code" : "table",
      scrollWidth: node.scrollWidth,
      clientWidth: node.clientWidth,
      right: box(node).right,
      overflowX: getComputedStyle(node).overflowX,
    })),
  };
}"""
# Words of table headers that the layout split over two lines.
BROKEN_HEADER_WORDS = """() => {
  const broken = [];
  for (const th of document.querySelectorAll("#messages th")) {
    const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const match of node.data.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
        if (lines.size > 1) broken.push(match[0]);
      }
    }
  }
  return broken;
}"""


def check_layout(measured: dict[str, Any], size: str) -> None:
    page, scroller, column = measured["page"], measured["scroller"], measured["column"]
    assert page["scrollWidth"] <= page["innerWidth"], f"{size}: the page scrolls sideways: {page}"
    assert scroller["scrollWidth"] <= scroller["clientWidth"], f"{size}: the thread scrolls sideways: {scroller}"
    assert column["right"] <= scroller["right"], f"{size}: the column is wider than the thread: {measured}"
    assert len(measured["messages"]) == 2
    for message in measured["messages"]:
        # Every message within the column (not only the page): none is cut off.
        assert message["left"] >= column["left"] - 0.5 and message["right"] <= column["right"] + 0.5, (
            f"{size}: a message is wider than the column: {message} vs {column}"
        )
    kinds = sorted(b["kind"] for b in measured["boxes"])
    assert kinds == ["code", "table"], measured["boxes"]
    for wide in measured["boxes"]:
        assert wide["scrollWidth"] > wide["clientWidth"], f"{size}: the {wide['kind']} does not scroll: {wide}"
        assert wide["overflowX"] in ("auto", "scroll") and wide["right"] <= column["right"] + 0.5, wide


async def test_wide_code_and_tables_scroll_in_their_own_box_on_desktop_and_phone(page: Page) -> None:
    await page.set_viewport_size(DESKTOP)
    chat = await ChatPage.in_new_chat(page, DEV_KEY)
    await chat.pick_model(ECHO_MODEL)
    await chat.send(echo(WIDE))
    await chat.wait_for_status("complete")
    await expect(chat.last_answer().locator("th")).to_have_count(len(HEADERS))

    check_layout(await page.evaluate(MEASURE), "desktop")
    await chat.screenshot(SCREENSHOTS / "desktop-wide-content.png")

    await page.set_viewport_size(PHONE)
    await expect(page.get_by_role("button", name="Conversations", exact=True)).to_be_visible()
    check_layout(await page.evaluate(MEASURE), "phone")
    assert await page.evaluate(BROKEN_HEADER_WORDS) == [], "a table header broke in the middle of a word"
    await chat.last_answer().locator(".code-block").scroll_into_view_if_needed()
    await chat.screenshot(SCREENSHOTS / "phone-wide-content.png")


async def test_the_rename_box_is_wide_enough_to_type_in(page: Page, api: httpx.AsyncClient) -> None:
    title = "A conversation with a rather long title to edit"
    conversation = (await api.post("/v1/conversations", json={"title": title})).json()["id"]
    await page.set_viewport_size(DESKTOP)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY, path=f"/#{conversation}")
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        await page.set_viewport_size(viewport)
        if size == "phone":
            await page.get_by_role("button", name="Conversations", exact=True).click()
        await page.get_by_role("button", name=f"Rename “{title}”").click()
        field = page.get_by_label("New title")
        await expect(field).to_be_focused()
        field_box = await field.bounding_box()
        sidebar_box = await chat.conversations.bounding_box()
        assert field_box is not None and sidebar_box is not None
        # Most of the sidebar's width (it was 80 px, beside its buttons).
        assert field_box["width"] >= 0.75 * sidebar_box["width"], (size, field_box, sidebar_box)
        for name in ("Save", "Cancel"):
            button = await chat.conversations.get_by_role("button", name=name).bounding_box()
            assert button is not None and button["x"] + button["width"] <= sidebar_box["x"] + sidebar_box["width"]
        await chat.screenshot(SCREENSHOTS / f"{size}-rename.png")
        await field.press("Escape")
        await expect(field).to_have_count(0)
