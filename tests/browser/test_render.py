"""How an answer looks: markdown rendered safely, typed out smoothly while it streams.

The answers here come from ECHO_MODEL (see conftest.py): the fake provider answers with the
message itself, so a test decides exactly what the model says.
"""

from __future__ import annotations

import itertools
import json
import statistics
from typing import Any

import httpx
import pytest
from playwright.async_api import BrowserContext, Page, Route, expect

from parley_dev.stack import Stack
from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY, ECHO_MODEL, SCREENSHOTS

from .chat_page import ChatPage

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Records, in the page, every state of the newest answer: its status, its text, and the text of
# its first code block (a MutationObserver sees every change, however briefly it lasted).
FRAME_RECORDER = """() => {
  window.__frames = [];
  const list = document.getElementById("messages");
  new MutationObserver(() => {
    const answer = [...list.querySelectorAll(".message.assistant")].at(-1);
    if (!answer) return;
    const text = answer.querySelector(".text");
    const code = text.querySelector("pre code");
    window.__frames.push({ status: answer.dataset.status, text: text.textContent, code: code?.textContent ?? null });
  }).observe(list, { childList: true, subtree: true, characterData: true, attributes: true });
}"""

MARKDOWN_CODE = 'def greet(name):\n    return f"Hello, {name}!"'
MARKDOWN = f"""# Shopping list

Buy **fresh bread** and *some* `milk` from [the market](https://example.com/market).

- apples
- pears
- plums

1. first
2. second

```python
{MARKDOWN_CODE}
```

> Lists, code and quotes all render."""

# Long words arrive one per event, each in one piece, about three a second.
LONG_WORDS = (
    "Antidisestablishmentarianism Floccinaucinihilipilification Supercalifragilisticexpialidocious "
    "Pseudopseudohypoparathyroidism Hippopotomonstrosesquippedaliophobia Incomprehensibilities end."
)
SHORTEST_LONG_WORD = 21


def echo(text: str, **directive: Any) -> str:
    """A message that ECHO_MODEL answers with `text`, word by word."""
    return f"{text}\n[[fake {json.dumps({'echo': True, **directive})}]]"


async def ask_echo_model(chat: ChatPage, text: str, **directive: Any) -> None:
    await chat.new_chat()
    await chat.page.get_by_role("combobox", name="Model", exact=True).select_option(ECHO_MODEL)
    await chat.send(echo(text, **directive))


async def test_markup_in_an_answer_is_shown_as_text_and_never_runs(page: Page, api: httpx.AsyncClient) -> None:
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    answer = (
        'Careful: <script>window.__pwned = 1</script> <img src=x onerror="window.__pwned = 2"> '
        "[link](javascript:alert(1)) [other](JaVaScRiPt:window.__pwned=3) [data](data:text/html,hi)\n\n"
        '**<img src=x onerror="window.__pwned = 4">** and [<b>safe</b>](https://example.com/safe)\n\n'
        "```html\n<script>window.__pwned = 5</script>\n```"
    )
    await ask_echo_model(chat, answer, tokens_per_s=40)
    await chat.wait_for_status("complete")

    text = chat.last_answer().locator(".text")
    shown = await text.text_content() or ""
    for literal in (
        "<script>window.__pwned = 1</script>",
        '<img src=x onerror="window.__pwned = 2">',
        "[link](javascript:alert(1))",
        "[other](JaVaScRiPt:window.__pwned=3)",
        "[data](data:text/html,hi)",
        '<img src=x onerror="window.__pwned = 4">',
        "<b>safe</b>",
    ):
        assert literal in shown, f"{literal!r} is not shown as written: {shown!r}"
    assert await text.locator("script, img, b, iframe").count() == 0
    # The one link is the https: one; the javascript: and data: ones are plain text.
    links = text.get_by_role("link")
    await expect(links).to_have_count(1)
    await expect(links).to_have_attribute("href", "https://example.com/safe")
    await expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    await expect(links).to_have_attribute("target", "_blank")
    await expect(text.locator("pre code")).to_have_text("<script>window.__pwned = 5</script>")
    assert await page.evaluate("() => window.__pwned") is None
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == answer, "the model really said all of it"


async def test_markdown_renders_while_streaming_and_when_done(
    page: Page, context: BrowserContext, stack: Stack, api: httpx.AsyncClient
) -> None:
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    await page.evaluate(FRAME_RECORDER)
    await ask_echo_model(chat, MARKDOWN, tokens_per_s=15)
    await chat.wait_for_status("complete")

    text = chat.last_answer().locator(".text")
    await expect(text.locator("h3")).to_have_text("Shopping list")
    await expect(text.locator("strong")).to_have_text("fresh bread")
    await expect(text.locator("em")).to_have_text("some")
    await expect(text.locator("p > code")).to_have_text("milk")
    await expect(text.get_by_role("link", name="the market")).to_have_attribute("href", "https://example.com/market")
    await expect(text.locator("ul > li")).to_have_text(["apples", "pears", "plums"])
    await expect(text.locator("ol > li")).to_have_text(["first", "second"])
    await expect(text.locator("blockquote")).to_have_text("Lists, code and quotes all render.")
    code = text.locator("pre code")
    await expect(code).to_have_count(1)
    assert await code.text_content() == MARKDOWN_CODE
    await expect(text.locator(".code-block")).to_have_attribute("data-language", "python")

    # While it streamed: the code block showed before its closing fence had arrived, and no
    # half-arrived marker (**, *, `) ever appeared as text.
    frames: list[dict[str, Any]] = await page.evaluate("() => window.__frames")
    streaming = [f for f in frames if f["status"] == "streaming"]
    assert any(f["code"] and f["code"] != MARKDOWN_CODE and MARKDOWN_CODE.startswith(f["code"]) for f in streaming), (
        "an unclosed code block was not shown as code while the answer streamed"
    )
    assert not [f["text"] for f in frames if "*" in f["text"] or "`" in f["text"]], "markdown markers showed as text"

    await text.get_by_role("button", name="Copy code").click()
    await expect(text.get_by_role("button", name="Copy code")).to_have_attribute("data-copied", "")
    assert await page.evaluate("() => navigator.clipboard.readText()") == MARKDOWN_CODE
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == MARKDOWN
    await chat.screenshot(SCREENSHOTS / "desktop-markdown-answer.png")


def steps_of(lengths: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(lengths)]


async def test_the_typewriter_shows_words_that_arrive_whole_a_few_characters_at_a_time(
    page: Page, api: httpx.AsyncClient
) -> None:
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    # Recorded from an empty conversation: the one the page opened at sign-in is not this answer.
    await chat.new_chat()
    await chat.record()
    await ask_echo_model(chat, LONG_WORDS, tokens_per_s=3)
    await chat.wait_for_answer_text()
    await expect(chat.last_answer()).to_have_attribute("aria-busy", "true")
    await chat.wait_for_status("complete")

    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == LONG_WORDS
    assert await chat.answer_text() == LONG_WORDS, "it ends showing the whole answer"
    lengths = await chat.lengths()
    assert lengths == sorted(lengths), f"the answer's text shrank or was replaced: {lengths}"
    steps = steps_of(lengths)
    # Each word arrived whole (21 to 36 characters); the page showed it in steps of about 5
    # (the last step may be larger: what is left appears at once when the answer ends).
    assert max(steps[:-1]) < SHORTEST_LONG_WORD - 5, f"words appeared whole: {steps}"
    assert statistics.median(steps) <= 6, f"not a few characters at a time: {steps}"
    assert len(steps) >= len(LONG_WORDS) // 8, f"too few steps: {steps}"


@pytest.mark.parametrize("setting", ["reduced-motion", "chars=0"])
async def test_without_the_typewriter_text_appears_as_it_arrives(
    page: Page, stack: Stack, api: httpx.AsyncClient, setting: str
) -> None:
    if setting == "reduced-motion":
        await page.emulate_media(reduced_motion="reduce")
    else:

        async def without_typewriter(route: Route) -> None:
            response = await route.fetch()
            page_html = await response.text()
            assert 'content="chars=5; interval-ms=50"' in page_html
            await route.fulfill(response=response, body=page_html.replace("chars=5;", "chars=0;"))

        await page.route(f"{stack.base_url}/", without_typewriter)
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    # Recorded from an empty conversation: the one the page opened at sign-in is not this answer.
    await chat.new_chat()
    await chat.record()
    await ask_echo_model(chat, LONG_WORDS, tokens_per_s=3)
    await chat.wait_for_status("complete")

    assert await chat.answer_text() == LONG_WORDS
    steps = steps_of(await chat.lengths())
    assert max(steps) >= SHORTEST_LONG_WORD, f"the words did not appear whole: {steps}"
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == LONG_WORDS


async def test_the_typewriter_catches_up_when_far_behind(page: Page, api: httpx.AsyncClient) -> None:
    # 2,000 characters arrive in one piece while the answer goes on slowly: at 5 characters a
    # tick that would be 400 ticks (20 s) behind; the buffer works the backlog off in bigger steps.
    burst = "x" * 2000
    text = f"Start {burst} and then the answer goes on slowly, one word at a time, to its end."
    chat = ChatPage(page)
    await chat.sign_in(DEV_KEY)
    # Recorded from an empty conversation: the one the page opened at sign-in is not this answer.
    await chat.new_chat()
    await chat.record()
    await ask_echo_model(chat, text, tokens_per_s=2)
    await chat.wait_for_status("complete")
    assert await chat.answer_text() == text
    lengths = await chat.lengths()
    assert lengths == sorted(lengths), f"the answer's text shrank or was replaced: {lengths}"
    through_burst = [n for n in lengths if 6 < n <= len("Start ") + len(burst)]
    assert len(through_burst) < 100, f"the backlog was shown 5 characters at a time: {len(through_burst)} steps"
    assert max(steps_of(lengths)) > 40, "no catch-up step"
    saved = await saved_answer(api, await chat.current_conversation_id())
    assert saved["content"] == text
