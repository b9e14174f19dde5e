"""What the browser tests share beyond the page object (tests/browser/chat_page.py): the
users' keys, the models, a prompt, axe-core's findings and the web client's saved history."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

from playwright.async_api import Page

BROWSER_TESTS = Path(__file__).parent.parent / "browser"
SCREENSHOTS = BROWSER_TESTS / "screenshots"

DEV_KEY = "pk_browser_" + secrets.token_urlsafe(18)
FRANK_KEY = "pk_browser_frank_" + secrets.token_urlsafe(18)
# Penny's plan has no tokens at all: every message she sends is refused (429 user_budget_exceeded).
PENNY_KEY = "pk_browser_penny_" + secrets.token_urlsafe(18)
# ada's conversations are only test_accessibility.py's (whose tests empty her list first and need to
# know all of it) and test_code_and_maths.py's.
ADA_KEY = "pk_browser_ada_" + secrets.token_urlsafe(18)
ECHO_MODEL = "fake-echo"
# ECHO_MODEL's twin with a price, so that answers and estimates cost something.
PRICED_MODEL = "fake-priced"

PROMPT = "Please explain, in a few friendly sentences, how streaming answers travel from the model to my screen"


# Everything in one key's saved-history database (null while it does not exist yet: opening a
# missing database here would create it without its tables).
SAVED = """async (name) => {
  if (!(await indexedDB.databases()).some((db) => db.name === name)) return null;
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open(name);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  try {
    const names = [...db.objectStoreNames];
    const tx = db.transaction(names);
    const all = (store) => new Promise((resolve) => {
      const request = tx.objectStore(store).getAll();
      request.onsuccess = () => resolve(request.result);
    });
    const out = {};
    for (const store of names) out[store] = await all(store);
    return out;
  } finally {
    db.close();
  }
}"""


def database_of(key: str) -> str:
    """The name of the IndexedDB database where the web client saves the history of `key`."""
    return "parley-history-" + hashlib.sha256(key.encode()).hexdigest()


async def saved_in_browser(page: Page, key: str) -> dict[str, Any] | None:
    """Everything in the key's saved-history database, by store (None while it does not exist)."""
    found: dict[str, Any] | None = await page.evaluate(SAVED, database_of(key))
    return found


AXE = (BROWSER_TESTS / "vendor" / "axe-core" / "axe.min.js").read_text()
# The rules axe runs: WCAG 2.0 to 2.2, A and AA, and its best practices.
AXE_RUN = """async () => {
  const results = await axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] },
    resultTypes: ["violations"],
  });
  return results.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help, targets: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
  }));
}"""


async def violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now."""
    if not await page.evaluate("() => typeof axe === 'object'"):
        await page.evaluate(AXE)  # (through the DevTools protocol: the page's own CSP does not apply)
    found: list[dict[str, Any]] = await page.evaluate(AXE_RUN)
    return [v for v in found if v["impact"] in ("serious", "critical")]
