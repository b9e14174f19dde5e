"""Chromium asks for compressed answers by itself: its fetch reader gets every frame decoded
the moment it arrives, and the web client's SSE parser reads the same answer from it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.async_api import Page

from tests.support.api import saved_answer
from tests.support.browser import DEV_KEY

pytestmark = [pytest.mark.integration, pytest.mark.browser]

READ_STREAM = """
async ([key, conversationId]) => {
  const { readEvents } = await import("/web/sse.js");
  const response = await fetch(`/v1/conversations/${conversationId}/messages`, {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ content: "Answer me compressed, please" }),
  });
  const [raw, parsed] = response.body.tee();
  const reads = [];
  const reader = raw.pipeThrough(new TextDecoderStream()).getReader();
  const reading = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      reads.push(value);
    }
  })();
  const frames = [];
  for await (const frame of readEvents(parsed)) {
    if (frame.comment === undefined) frames.push({ id: frame.id, event: frame.event, data: JSON.parse(frame.data) });
  }
  await reading;
  return { encoding: response.headers.get("content-encoding"), reads, frames };
}
"""


async def test_a_gzip_stream_reaches_the_page_frame_by_frame(page: Page, api: httpx.AsyncClient) -> None:
    reply = await api.post("/v1/conversations", json={"title": "compressed"})
    conversation = reply.json()["id"]
    await page.goto("/")
    got: dict[str, Any] = await page.evaluate(READ_STREAM, [DEV_KEY, conversation])
    assert got["encoding"] in ("gzip", "deflate"), got["encoding"]
    frames = got["frames"]
    assert frames[0]["event"] == "meta" and frames[-1]["event"] == "done"
    deltas = [f for f in frames if f["event"] == "delta"]
    assert len(deltas) > 5, "the answer came token by token"
    # Decoded as it arrived: every piece the page read ends where a frame ends.
    assert len(got["reads"]) > 5 and all(piece.endswith("\n\n") for piece in got["reads"]), got["reads"]
    assert [int(f["id"]) for f in frames] == sorted({int(f["id"]) for f in frames})
    saved = await saved_answer(api, conversation)
    assert "".join(f["data"]["text"] for f in deltas) == saved["content"]
