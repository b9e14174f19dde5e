"""The web client in a real headless Chromium, against the five services as real processes.

Chromium is Debian's (`/usr/bin/chromium`; `make test` installs it when missing). Playwright drives it over
CDP and downloads no browser of its own; it starts Chromium with a fresh `--user-data-dir`,
and every test gets a fresh browser context (no cookies, storage or cache from another test).

The stack here runs the demo model slowly (about 4 s an answer), so that a test can act
while an answer streams: stop it, switch conversation, drop the connection. It also offers
ECHO_MODEL, served by the fake provider server (parley_dev.fake_providers), which says any text
a test asks for: its `[[fake {"echo": true}]]` directive answers with the message verbatim.
The default model stays the demo.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from parley_dev.fake_providers import FakeProviderServer
from parley_dev.infra import Infra, provide
from parley_dev.stack import Stack, StackConfig, running
from tests.required import unavailable
from tests.support.browser import ADA_KEY, DEV_KEY, ECHO_MODEL, FRANK_KEY, PENNY_KEY, PRICED_MODEL

# Monthly limits (the page shows what is left): the dev user's plan has room for every test
# here many times over; frank's has no limit. Everyone else keeps the default plan.
PLANS = {
    "default": {"monthly_tokens": 10_000_000, "monthly_cost_micros": 50_000_000},
    "browser": {"monthly_tokens": 5_000_000, "monthly_cost_micros": 25_000_000},
    "unlimited": {},
    "spent": {"monthly_tokens": 0},
}
USER_PLANS = {"dev": "browser", "frank": "unlimited", "penny": "spent"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This machine's network is closed: without these, Chromium keeps dialling Google's hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web client in a real headless Chromium")


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="package")
def infra() -> Iterator[Infra]:
    with provide() as found:
        yield found


@pytest.fixture(scope="package")
async def fake_provider() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


def models_file(workdir: Path, fake: FakeProviderServer) -> Path:
    """The repository's model registry (the demo model, the default) plus ECHO_MODEL and PRICED_MODEL."""
    registry = yaml.safe_load((Path(__file__).parents[2] / "config" / "models.yaml").read_text())
    registry["providers"]["fake-openai"] = {"kind": "openai", "base_url": fake.url + "/v1"}
    registry["models"][ECHO_MODEL] = {
        "provider": "fake-openai",
        "upstream_model": "echo-1",
        "context_window": 32_000,
        "max_output_tokens": 4096,
        "input_price_per_mtok": 0,
        "output_price_per_mtok": 0,
    }
    registry["models"][PRICED_MODEL] = {
        **registry["models"][ECHO_MODEL],
        "max_output_tokens": 256,
        "input_price_per_mtok": 150,
        "output_price_per_mtok": 600,
    }
    path = workdir / "models.yaml"
    path.write_text(yaml.safe_dump(registry))
    return path


@pytest.fixture(scope="package")
async def stack(
    infra: Infra, fake_provider: FakeProviderServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("browser-stack")
    config = StackConfig(
        infra=infra,
        namespace="b" + uuid.uuid4().hex[:10],
        workdir=workdir,
        dev_api_key=DEV_KEY,
        keeps_s3_data=False,
        extra_env={
            "PARLEY_MODELS_FILE": str(models_file(workdir, fake_provider)),
            "PARLEY_WORKER_PROVIDERS": '["demo", "fake-openai"]',
            "PARLEY_PROVIDER_API_KEYS": '{"fake-openai": "sk-fake"}',
            "PARLEY_API_KEYS": json.dumps({"frank": FRANK_KEY, "ada": ADA_KEY, "penny": PENNY_KEY}),
            "PARLEY_DEMO_FIRST_TOKEN_DELAY_MS": "150",
            "PARLEY_DEMO_TOKENS_PER_S": "12",
            "PARLEY_HEARTBEAT_S": "1",
            # A stopped gateway must not wait long for streams whose clients went away.
            "PARLEY_SHUTDOWN_GRACE_S": "3",
            "PARLEY_PLANS": json.dumps(PLANS),
            "PARLEY_USER_PLANS": json.dumps(USER_PLANS),
        },
    )
    async with running(config) as s:
        yield s
    assert all(code == 0 for code in s.exit_codes.values()), f"unclean exits: {s.exit_codes}"


@pytest.fixture(scope="package")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    if executable is None:
        unavailable(
            "browser", "Chromium is not installed: `apt-get install -y chromium` (`make test` installs it as root)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


@pytest.fixture
async def context(browser: Browser, stack: Stack) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(base_url=stack.base_url, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(20_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A tab; the test fails if the page throws or the Content-Security-Policy blocks anything."""
    tab = await context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    tab.on(
        "console",
        lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None,
    )
    yield tab
    assert not problems, problems


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The API as another device of the dev user would use it."""
    async with httpx.AsyncClient(
        base_url=stack.base_url, headers={"Authorization": f"Bearer {DEV_KEY}"}, timeout=30.0
    ) as client:
        yield client
