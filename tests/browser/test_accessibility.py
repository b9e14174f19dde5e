"""The web client for people who use the keyboard, a screen reader, a phone, or see less contrast:
focus rings and the edges of controls stand out (3:1), the conversation list is one tab stop
with arrow keys inside it, focus never drops to the page when a conversation is deleted, the
phone's sidebar buttons are big enough to tap and a tap outside the drawer closes it, and axe-core
(tests/browser/vendor/axe-core, pinned by tools/vendor-web.sh; never served by the app) finds no
serious or critical problem in the main states.

The tests sign in as ada (see conftest.py), whose conversations only this module makes.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Dialog, Locator, Page, expect

from parley_dev.stack import Stack
from tests.support.browser import ADA_KEY, ECHO_MODEL, SCREENSHOTS, violations

from .chat_page import ChatPage, sized_context

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# How a focused control is drawn, and the colour the ring is drawn on: what is behind the control
# (its nearest ancestor with a background), or the control's own for a ring drawn inside it.
FOCUS_RING = """(node) => {
  const style = getComputedStyle(node);
  let behind = parseFloat(style.outlineOffset) < 0 ? node : node.parentElement;
  while (behind && getComputedStyle(behind).backgroundColor.endsWith(", 0)")) behind = behind.parentElement;
  return {
    focusVisible: node.matches(":focus-visible"),
    style: style.outlineStyle,
    width: parseFloat(style.outlineWidth),
    color: style.outlineColor,
    behind: behind ? getComputedStyle(behind).backgroundColor : "rgb(255, 255, 255)",
  };
}"""
# Every visible field and button: its edge, its fill, and what is behind it.
CONTROL_EDGES = """() => [...document.querySelectorAll("input, select, textarea, button")]
  .filter((node) => !["checkbox", "radio"].includes(node.type))
  .filter((node) => node.checkVisibility())
  .map((node) => {
    const style = getComputedStyle(node);
    let behind = node.parentElement;
    while (behind && getComputedStyle(behind).backgroundColor.endsWith(", 0)")) behind = behind.parentElement;
    return {
      name: `${node.localName}#${node.id || node.className || node.textContent.trim().slice(0, 20)}`,
      field: node.localName !== "button",
      border: parseFloat(style.borderTopWidth) > 0 ? style.borderTopColor : "transparent",
      fill: style.backgroundColor,
      behind: behind ? getComputedStyle(behind).backgroundColor : "rgb(255, 255, 255)",
    };
  })"""
# The controls of the conversation list that Tab reaches.
LIST_TAB_STOPS = """() => [...document.querySelectorAll("#conversation-list button, #conversation-list input")]
  .filter((node) => node.tabIndex >= 0 && node.checkVisibility()).length"""


def rgb(css: str) -> tuple[float, float, float, float]:
    """`rgb(r, g, b)` or `rgba(r, g, b, a)` as numbers."""
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)]
    assert len(numbers) in (3, 4), css
    return numbers[0], numbers[1], numbers[2], numbers[3] if len(numbers) == 4 else 1.0


def contrast(first: str, second: str) -> float:
    """WCAG's contrast ratio of two opaque colours."""

    def luminance(css: str) -> float:
        r, g, b, alpha = rgb(css)
        assert alpha == 1.0, f"{css} is not opaque"
        linear = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def transparent(css: str) -> bool:
    return css == "transparent" or rgb(css)[3] == 0


@pytest.fixture
async def context(request: pytest.FixtureRequest, browser: Browser, stack: Stack) -> AsyncIterator[BrowserContext]:
    """The conftest's `page` runs in this context: "desktop", "phone" or "desktop-dark"."""
    size, _, scheme = getattr(request, "param", "desktop").partition("-")
    ctx = await sized_context(browser, stack.base_url, size, dark=scheme == "dark")
    yield ctx
    await ctx.close()


@pytest.fixture
async def ada(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """ada's API, her conversation list emptied first."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {ADA_KEY}"}, timeout=30.0
    ) as client:
        while data := (await client.get("/v1/conversations", params={"limit": 100})).json()["data"]:
            for conversation in data:
                assert (await client.delete(f"/v1/conversations/{conversation['id']}")).status_code == 204
        yield client


async def conversations(ada: httpx.AsyncClient, *titles: str) -> list[str]:
    """Creates them in this order, so that the list shows the last one first."""
    ids = []
    for title in titles:
        reply = await ada.post("/v1/conversations", json={"title": title})
        assert reply.status_code in (200, 201), reply.text
        ids.append(reply.json()["id"])
    return ids


def accept_dialogs(page: Page) -> None:
    async def accept(dialog: Dialog) -> None:
        await dialog.accept()

    page.on("dialog", accept)


async def drawer_settled(page: Page) -> None:
    """Until the phone's drawer has slid all the way in."""
    await expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
    await page.wait_for_function("() => document.getElementById('sidebar').getAnimations().length === 0")


async def focus_by_keyboard(page: Page, control: Locator) -> None:
    """Focus on `control` as a keyboard user's (a key pressed first, so the ring is drawn)."""
    await page.keyboard.press("Shift")
    await control.focus()


async def ring_contrast(control: Locator) -> float:
    ring = await control.evaluate(FOCUS_RING)
    assert ring["focusVisible"], f"{control} is not focused by keyboard"
    assert ring["style"] != "none" and ring["width"] >= 2, ring
    return contrast(ring["color"], ring["behind"])


@pytest.mark.parametrize("context", ["desktop", "desktop-dark"], indirect=True)
async def test_focus_rings_and_the_edges_of_controls_stand_out(
    page: Page, ada: httpx.AsyncClient, request: pytest.FixtureRequest
) -> None:
    scheme = "dark" if "dark" in request.node.callspec.params["context"] else "light"
    await conversations(ada, "Focus rings")
    chat = ChatPage(page)
    await page.goto("/")
    measured = {}
    for name, control in {
        "API key": page.get_by_label("API key"),
        "Sign in": page.get_by_role("button", name="Sign in"),
    }.items():
        await focus_by_keyboard(page, control)
        measured[name] = await ring_contrast(control)
    edges = await page.evaluate(CONTROL_EDGES)
    await chat.sign_in(ADA_KEY)
    for name, control in {
        "New conversation": page.get_by_role("button", name="New conversation"),
        "a conversation": chat.conversation("Focus rings"),
        "Model": page.get_by_role("combobox", name="Model", exact=True),
        "Sign out": page.get_by_role("button", name="Sign out"),
        "Message": chat.composer,
    }.items():
        await focus_by_keyboard(page, control)
        measured[name] = await ring_contrast(control)
    weak = {name: round(ratio, 2) for name, ratio in measured.items() if ratio < 3}
    assert not weak, f"focus rings below 3:1 against what is behind them ({scheme}): {weak}"
    await chat.screenshot(SCREENSHOTS / f"desktop-{scheme}-focus-ring.png")

    # Fields show their edge; a button shows its edge or its fill.
    faint = []
    for control in edges + await page.evaluate(CONTROL_EDGES):
        edge = 0.0 if transparent(control["border"]) else contrast(control["border"], control["behind"])
        fill = 0.0 if transparent(control["fill"]) else contrast(control["fill"], control["behind"])
        if control["field"] and edge < 3:
            faint.append((control["name"], round(edge, 2)))
        elif not control["field"] and not transparent(control["border"]) and max(edge, fill) < 3:
            faint.append((control["name"], round(edge, 2)))
    assert not faint, f"controls whose edge is below 3:1 against what is behind them ({scheme}): {faint}"


async def test_the_conversation_list_is_one_tab_stop_with_arrow_keys_inside(page: Page, ada: httpx.AsyncClient) -> None:
    await conversations(ada, "Third", "Second", "First")  # listed First, Second, Third
    chat = ChatPage(page)
    await chat.sign_in(ADA_KEY)
    await expect(chat.conversations.locator("button.open")).to_have_count(3)
    assert await page.evaluate(LIST_TAB_STOPS) == 1

    # Tab reaches the list once, at a conversation's title.
    await focus_by_keyboard(page, page.get_by_role("button", name="New conversation"))
    for _ in range(5):
        await page.keyboard.press("Tab")
        if await page.evaluate("() => !!document.activeElement.closest('#conversation-list')"):
            break
    first, second, third = (chat.conversation(title) for title in ("First", "Second", "Third"))
    await expect(first).to_be_focused()

    await page.keyboard.press("ArrowDown")
    await expect(second).to_be_focused()
    await page.keyboard.press("End")
    await expect(third).to_be_focused()
    await page.keyboard.press("ArrowDown")  # the end: it stays
    await expect(third).to_be_focused()
    await page.keyboard.press("Home")
    await expect(first).to_be_focused()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("button", name="Rename “First”")).to_be_focused()
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("button", name="Delete “First”")).to_be_focused()
    await page.keyboard.press("ArrowDown")  # the same button, a row down
    await expect(page.get_by_role("button", name="Delete “Second”")).to_be_focused()
    await page.keyboard.press("ArrowLeft")
    await page.keyboard.press("ArrowLeft")
    await expect(second).to_be_focused()
    assert await page.evaluate(LIST_TAB_STOPS) == 1
    await chat.screenshot(SCREENSHOTS / "desktop-conversation-list-keyboard.png")

    # Tab leaves the list; Shift+Tab comes back to where the keyboard was.
    await page.keyboard.press("Tab")
    assert not await page.evaluate("() => !!document.activeElement.closest('#conversation-list')")
    await page.keyboard.press("Shift+Tab")
    await expect(second).to_be_focused()

    # Enter opens it, and the list's tab stop stays on it.
    await page.keyboard.press("Enter")
    await expect(page.locator("#conversation-title")).to_have_text("Second")
    assert await page.evaluate(LIST_TAB_STOPS) == 1


async def test_deleting_a_conversation_keeps_the_focus_in_the_list(page: Page, ada: httpx.AsyncClient) -> None:
    await conversations(ada, "Third", "Second", "First")
    chat = ChatPage(page)
    accept_dialogs(page)
    await chat.sign_in(ADA_KEY)
    await expect(chat.conversations.locator("button.open")).to_have_count(3)

    # The middle one: focus goes to the row that takes its place.
    await focus_by_keyboard(page, page.get_by_role("button", name="Delete “Second”"))
    await page.keyboard.press("Enter")
    await expect(chat.conversation("Second")).to_have_count(0)
    await expect(chat.conversation("Third")).to_be_focused()
    # The last one: to the row above.
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")
    await expect(page.get_by_role("button", name="Delete “Third”")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(chat.conversation("Third")).to_have_count(0)
    await expect(chat.conversation("First")).to_be_focused()
    await chat.screenshot(SCREENSHOTS / "desktop-focus-after-delete.png")
    # The only one: to "New conversation".
    await focus_by_keyboard(page, page.get_by_role("button", name="Delete “First”"))
    await page.keyboard.press("Enter")
    await expect(chat.conversations.locator("button.open")).to_have_count(0)
    await expect(page.get_by_role("button", name="New conversation")).to_be_focused()


@pytest.mark.parametrize("context", ["phone"], indirect=True)
async def test_phone_sidebar_buttons_are_big_and_apart_and_a_tap_outside_closes_the_drawer(
    page: Page, ada: httpx.AsyncClient
) -> None:
    await conversations(ada, "Groceries for the week", "Trip to Lisbon", "Tax questions")
    chat = ChatPage(page)
    await chat.sign_in(ADA_KEY)
    toggle = page.get_by_role("button", name="Conversations", exact=True)
    await toggle.tap()
    await drawer_settled(page)
    await expect(chat.conversations.locator("button.open")).to_have_count(3)

    targets = []
    for row in await chat.conversations.locator("li[data-conversation]").all():
        boxes = [await row.locator(f'[data-role="{role}"]').bounding_box() for role in ("open", "rename", "delete")]
        assert all(boxes), boxes
        targets.append(boxes)
    for open_box, rename, delete in targets:
        assert open_box["height"] >= 44, open_box
        for box in (rename, delete):
            assert box["width"] >= 44 and box["height"] >= 44, box
        assert rename["x"] - (open_box["x"] + open_box["width"]) >= 8, (open_box, rename)
        assert delete["x"] - (rename["x"] + rename["width"]) >= 8, (rename, delete)
    for above, below in itertools.pairwise(targets):
        assert below[2]["y"] - (above[2]["y"] + above[2]["height"]) >= 4, (above[2], below[2])
    await chat.screenshot(SCREENSHOTS / "phone-drawer-targets.png")

    # A tap inside the drawer (on a heading) leaves it open; one outside closes it.
    await chat.conversations.locator("h2").first.tap()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    drawer = await chat.conversations.bounding_box()
    assert drawer is not None
    await page.touchscreen.tap(drawer["x"] + drawer["width"] + 30, drawer["y"] + drawer["height"] / 2)
    await expect(chat.conversations).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")


CODE_AND_MATHS = (
    "The area of a circle is $A = \\pi r^2$.\n\n$$\n\\sum_{k=0}^{n} k = \\frac{n(n+1)}{2}\n$$\n\n"
    '```python\ndef area(r: float) -> float:\n    return 3.14159 * r * r  # approximately\n```\n[[fake {"echo": true}]]'
)


async def test_axe_finds_nothing_serious_in_the_main_states_on_a_desktop(page: Page, ada: httpx.AsyncClient) -> None:
    chat = ChatPage(page)
    found: dict[str, list[dict[str, Any]]] = {}

    await page.goto("/")
    await expect(page.get_by_label("API key")).to_be_visible()
    found["signed out"] = await violations(page)

    # Signing in from a link to a conversation that is not there (deleted, mistyped): the error banner.
    await chat.sign_in(ADA_KEY, path=f"/#c_{uuid.uuid4().hex}")
    await expect(chat.notice).to_be_visible()
    await expect(chat.notice).not_to_be_empty()
    found["the error banner"] = await violations(page)
    await chat.screenshot(SCREENSHOTS / "desktop-axe-error-banner.png")

    await chat.new_chat()
    found["an empty conversation"] = await violations(page)

    await page.get_by_role("combobox", name="Model", exact=True).select_option(ECHO_MODEL)
    await chat.send(CODE_AND_MATHS)
    await chat.wait_for_status("complete")
    await expect(chat.last_answer().locator(".katex")).to_have_count(2)
    await expect(chat.last_answer().locator(".hljs-keyword").first).to_have_text("def")
    found["an answer with code and maths"] = await violations(page)
    await chat.screenshot(SCREENSHOTS / "desktop-axe-code-and-maths.png")
    assert not {state: v for state, v in found.items() if v}, found


@pytest.mark.parametrize("context", ["phone"], indirect=True)
async def test_axe_finds_nothing_serious_on_a_phone_with_the_drawer_open(page: Page, ada: httpx.AsyncClient) -> None:
    await conversations(ada, "Groceries for the week", "Trip to Lisbon")
    chat = ChatPage(page)
    await page.goto("/")
    await expect(page.get_by_label("API key")).to_be_visible()
    signed_out = await violations(page)
    await chat.sign_in(ADA_KEY)
    await page.get_by_role("button", name="Conversations", exact=True).tap()
    await drawer_settled(page)
    drawer_open = await violations(page)
    await chat.screenshot(SCREENSHOTS / "phone-axe-drawer-open.png")
    assert not signed_out and not drawer_open, {"signed out": signed_out, "drawer open": drawer_open}
