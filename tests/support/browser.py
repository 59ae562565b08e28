"""Browser-test support: a live portal served by uvicorn in a thread, Debian's chromium driven by Playwright, and
axe-core injected into pages. Skips with a clear reason where chromium or axe-core are not installed."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from portal.app import create_app
from portal.embedded.llm_server import EmbeddedLLMServer
from portal.settings import Settings
from tests.conftest import free_port
from tests.support.auth import ensure_sample_role_rules

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
T = TypeVar("T")


def require_browser_tools() -> None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("browser tests need Debian's chromium (scripts/setup --test installs it)")
    if not AXE_JS.exists():
        pytest.skip("accessibility checks need axe-core (npm install, or scripts/setup --test)")


class LivePortal:
    """The real app on a real port, its event loop in a background thread (the browser needs a real server)."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.app = create_app(settings, configure_logs=False)
        self.port = port
        self.loop = asyncio.new_event_loop()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="live-portal", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live portal did not start")
            time.sleep(0.05)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        """Run a coroutine on the portal's own loop (its database engine and store belong to that loop)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def browser_portal(
    request: pytest.FixtureRequest, db_backend: str, _migrated_templates: Any, settings_factory: Any,
    sso_settings: dict[str, Any], llm_server: EmbeddedLLMServer,
) -> Iterator[LivePortal]:
    """A live portal for a browser journey: the embedded default database, the real LLM, the test identity
    provider's sign-in and the sample role rules. The journey's own module adds its data on `portal.run`."""
    # Skip before the PostgreSQL database would be made: that needs asyncio.run, which Playwright's running loop
    # (module-scoped chromium) forbids. _migrated_templates (session scope) is named so that pytest builds it
    # before the browser starts.
    if db_backend != "sqlite":
        pytest.skip("the browser journey runs once, on the embedded default database")
    database_url = request.getfixturevalue("database_url")
    port = free_port()
    settings = settings_factory(
        database_url=database_url, llm_base_url=llm_server.base_url, llm_max_tokens=120, llm_context_window=4096,
        public_url=f"http://127.0.0.1:{port}", **sso_settings,
    )
    portal = LivePortal(settings, port)
    portal.start()
    try:
        portal.run(ensure_sample_role_rules(portal.app))
        yield portal
    finally:
        portal.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it
    # is open, which would break every async test collected after the first browser test.
    require_browser_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.0/2.1 A and AA rules on the current page; violations of the given impacts."""
    page.add_script_tag(path=str(AXE_JS))
    result = page.evaluate(
        "async () => await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["html"][:120] for n in v["nodes"][:3]]}
        for v in result["violations"]
        if v["impact"] in impacts
    ]


def sign_in(page: Any, portal_url: str, sub: str, next_path: str = "/chat") -> None:
    """Sign in through the real identity provider's authorization form, as a person would."""
    page.goto(f"{portal_url}/auth/login?next={next_path}")
    page.fill("input[name=sub]", sub)
    page.click("button[type=submit]:has-text('Authorize')")
    page.wait_for_url(f"{portal_url}{next_path}*", timeout=30_000)
