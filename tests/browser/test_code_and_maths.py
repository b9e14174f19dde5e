"""Code and maths in answers: code coloured by highlight.js and LaTeX typeset by KaTeX, both
vendored in web/vendor/ (tools/vendor-web.sh) and kept by the service worker for offline reading;
and whatever a model writes (HTML, javascript: links, KaTeX's \\href and \\html… commands) never
becomes a live element, link or handler.

The answers come from ECHO_MODEL (see conftest.py), which says exactly what the test asks. The
tests sign in as ada, so that the dev user's conversation list, which other modules count, does
not grow here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from parley_dev.stack import Stack
from tests.support.api import saved_answer
from tests.support.browser import ADA_KEY, ECHO_MODEL, SCREENSHOTS
from tests.support.polling import eventually

from .chat_page import ChatPage, sized_context

pytestmark = [pytest.mark.integration, pytest.mark.browser]

ROOT = Path(__file__).parents[2]
CODE = 'def greet(name: str) -> str:\n    """Say hello."""\n    return f"Hello, {name}!"  # polite'
INLINE_TEX = [r"e^{i\pi} + 1 = 0", r"a^2 + b^2 = c^2"]
DISPLAY_TEX = [
    r"\int_0^\infty e^{-x^2}\,dx = \frac{\sqrt{\pi}}{2}",
    r"\sum_{n=1}^{\infty} \frac{1}{n^2} = \frac{\pi^2}{6}",
]
ANSWER = "\n".join(
    [
        f"Euler's identity is ${INLINE_TEX[0]}$, and \\({INLINE_TEX[1]}\\) holds in a right triangle;"
        " the book costs $5 or $10.",
        "",
        "$$",
        DISPLAY_TEX[0],
        "$$",
        "",
        f"\\[ {DISPLAY_TEX[1]} \\]",
        "",
        "```python",
        CODE,
        "```",
    ]
)

# Counts, on every change of the message list, the maths shown as a parse error (there must never
# be one for maths that is merely still arriving).
MATH_ERROR_RECORDER = """() => {
  window.__mathErrors = 0;
  const list = document.getElementById("messages");
  new MutationObserver(() => {
    window.__mathErrors += list.querySelectorAll(".message.assistant .math-error").length;
  }).observe(list, { childList: true, subtree: true, characterData: true });
}"""
# The fonts KaTeX's style sheet asked for that the browser could load (font-src of the CSP).
KATEX_FONTS = """async () => {
  await document.fonts.ready;
  return [...document.fonts].filter((f) => f.family.startsWith("KaTeX") && f.status === "loaded")
    .map((f) => f.family);
}"""
CACHED = """async () => {
  const kept = [];
  for (const name of await caches.keys()) {
    for (const request of await (await caches.open(name)).keys()) kept.push(new URL(request.url).pathname);
  }
  return kept;
}"""
# Every element of the answer that a browser could run, load or follow, or that the model named.
LIVE_MARKUP = """(text) => [...text.querySelectorAll("*")].flatMap((node) => {
  const found = [];
  const tag = node.localName;
  if (["script", "img", "iframe", "object", "embed", "a", "image", "use", "form", "input", "style", "link"]
      .includes(tag)) found.push(`<${tag}>`);
  for (const attr of node.getAttributeNames()) {
    const named = attr.startsWith("data-") && !node.closest(".code-block"); // (its data-language)
    if (/^on/i.test(attr) || /href$/i.test(attr) || ["src", "id"].includes(attr) || named) {
      found.push(`${tag}[${attr}]`);
    }
  }
  if (node.classList.contains("pwned")) found.push(`${tag}.pwned`);
  return found;
})"""


def echo(text: str, **directive: object) -> str:
    """A message that ECHO_MODEL answers with `text`, word by word."""
    return f"{text}\n[[fake {json.dumps({'echo': True, **directive})}]]"


def vendored_app_files() -> list[str]:
    """The files of web/vendor/ the app serves (licences aside), as URL paths."""
    paths = []
    for line in (ROOT / "tools" / "vendor-web.sha256").read_text().splitlines():
        path = line.split("  ", 1)[1]
        if "/web/vendor/" in path and not path.endswith("LICENSE"):
            paths.append("/web/vendor/" + path.split("/web/vendor/", 1)[1])
    return paths


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """ada's API (this module's answers are hers)."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {ADA_KEY}"}, timeout=30.0
    ) as client:
        yield client


@pytest.fixture(params=["desktop", "phone"])
async def context(request: pytest.FixtureRequest, browser: Browser, stack: Stack) -> AsyncIterator[BrowserContext]:
    """The conftest's `page` runs in this context: at a desktop's size, then at a phone's."""
    ctx = await sized_context(browser, stack.base_url, request.param)
    yield ctx
    await ctx.close()


async def ask_echo_model(chat: ChatPage, text: str, **directive: object) -> None:
    drawer = chat.page.get_by_role("button", name="Conversations", exact=True)
    if await drawer.is_visible():  # a phone: "New conversation" is in the drawer
        await drawer.click()
    await chat.new_chat()
    await chat.page.get_by_role("combobox", name="Model", exact=True).select_option(ECHO_MODEL)
    await chat.send(echo(text, **directive))


async def test_code_is_highlighted_and_maths_typeset_and_kept_offline(
    page: Page, api: httpx.AsyncClient, request: pytest.FixtureRequest
) -> None:
    size = request.node.callspec.params["context"]
    chat = ChatPage(page)
    await chat.sign_in(ADA_KEY)
    await page.evaluate(MATH_ERROR_RECORDER)
    await ask_echo_model(chat, ANSWER, tokens_per_s=40)
    await chat.wait_for_status("complete")
    text = chat.last_answer().locator("div.text")

    # Maths: four expressions typeset (MathML for screen readers, the TeX kept as its annotation),
    # the two display ones on lines of their own, and prices left as text.
    await expect(text.locator(".katex")).to_have_count(4)
    await expect(text.locator(".math-display .katex-display")).to_have_count(2)
    await expect(text.locator('.katex annotation[encoding="application/x-tex"]')).to_have_text(
        [INLINE_TEX[0], INLINE_TEX[1], DISPLAY_TEX[0], DISPLAY_TEX[1]]
    )
    await expect(text.locator(".katex-html").first).to_have_attribute("aria-hidden", "true")
    await expect(text.locator("p").first).to_contain_text("the book costs $5 or $10.")
    assert "KaTeX_Main" in await page.evaluate(KATEX_FONTS), "KaTeX's fonts did not load"
    assert await page.evaluate("() => window.__mathErrors") == 0, "maths still arriving was shown as an error"
    message_box = await chat.last_answer().bounding_box()
    for display in await text.locator(".math-display").all():
        box = await display.bounding_box()
        assert message_box and box and box["x"] + box["width"] <= message_box["x"] + message_box["width"]

    # Code: coloured by token, and still exactly the text the model wrote.
    code = text.locator("pre code")
    await expect(code).to_have_text(CODE)
    await expect(code).to_have_class("language-python")
    await expect(code.locator(".hljs-keyword").first).to_have_text("def")
    await expect(code.locator(".hljs-title")).to_have_text("greet")
    await expect(code.locator(".hljs-comment")).to_have_text("# polite")
    await expect(code.locator(".hljs-string").first).to_have_text('"""Say hello."""')
    keyword, plain = await code.evaluate(
        """(code) => [getComputedStyle(code.querySelector(".hljs-keyword")).color, getComputedStyle(code).color]"""
    )
    assert keyword != plain, "the keyword is not coloured"

    # Offline, the answer looks the same: the service worker keeps the vendored files.
    expected = vendored_app_files()
    assert len(expected) >= 25

    async def all_kept() -> bool:
        return set(expected) <= set(await page.evaluate(CACHED))

    await eventually(all_kept, what="the service worker keeps every vendored file")
    await chat.screenshot(SCREENSHOTS / f"{size}-code-and-maths.png")
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == ANSWER, "the model really said all of it"


HOSTILE_CODE_HTML = '<script>window.__pwned = 7</script>\n<img src=x onerror="window.__pwned = 8">'
HOSTILE_CODE_BREAKOUT = '</code></pre><img src=x onerror="window.__pwned = 9"><pre><code>'
HOSTILE = "\n".join(
    [
        'Markup: <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">',
        "",
        r"Maths: $\href{javascript:window.__pwned=3}{click me}$ and \(\url{javascript:window.__pwned=4}\),"
        r" $\htmlClass{pwned}{x}$ $\htmlId{pwned}{y}$ $\htmlStyle{background:red}{z}$ $\htmlData{foo=bar}{w}$"
        r" $\includegraphics[height=1em]{https://example.com/x.png}$ $\text{<img src=x onerror=alert(5)>}$",
        "",
        "$$",
        r"\href{javascript:window.__pwned=6}{\text{display}} \def\a{\a\a}",
        "$$",
        "",
        r"Expansion bomb: $\def\b{\b\b}\b$ and size bomb: $\rule{10000em}{10000em}$.",
        "",
        "```html",
        HOSTILE_CODE_HTML,
        "```",
        "",
        "```js",
        HOSTILE_CODE_BREAKOUT,
        "```",
    ]
)


@pytest.mark.parametrize("context", ["desktop"], indirect=True)
async def test_hostile_markup_maths_and_code_never_become_live_elements(page: Page, api: httpx.AsyncClient) -> None:
    chat = ChatPage(page)
    await chat.sign_in(ADA_KEY)
    await ask_echo_model(chat, HOSTILE, tokens_per_s=80)
    await chat.wait_for_status("complete")
    text = chat.last_answer().locator("div.text")

    # Every expression went through KaTeX (or showed as written), and nothing it made is live.
    await expect(text.locator(".katex")).to_have_count(10)
    await expect(text.locator(".math-error")).to_have_count(1)  # the expansion bomb, shown as written
    await expect(text.locator(".math-error")).to_have_text(r"$\def\b{\b\b}\b$")
    assert await text.evaluate(LIVE_MARKUP) == []
    await expect(text.get_by_role("link")).to_have_count(0)
    await expect(text.get_by_role("img")).to_have_count(0)
    await expect(text.locator("p").first).to_have_text(
        'Markup: <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2">'
    )
    # The size bomb is capped (KaTeX's maxSize, 10 em).
    rule = await text.locator(".katex .katex-rule").bounding_box()
    assert rule is not None and rule["height"] < 300, rule

    # Code: highlighted as HTML and JavaScript, and shown exactly as written.
    code = text.locator("pre code")
    await expect(code).to_have_text([HOSTILE_CODE_HTML, HOSTILE_CODE_BREAKOUT])
    await expect(code.first.locator(".hljs-tag").first).to_have_text("<script>")
    assert await page.evaluate("() => window.__pwned") is None
    await chat.screenshot(SCREENSHOTS / "desktop-hostile-code-and-maths.png")
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == HOSTILE, "the model really said all of it"
