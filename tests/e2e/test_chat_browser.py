"""A person in a real browser: sign in through the test identity provider, ask by keyboard alone, watch the answer
stream, open the cited passage; axe-core finds no serious or critical WCAG 2.1 AA problem on either page; a person
without access to the collection never sees its passages."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chat.helpers import sample_library
from tests.support.browser import LivePortal, axe_violations, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.llm]

QUESTION = "How long must staff wash their hands before patient contact?"
NURSE = "noah.nurse@example.org"
TEACHER = "tara.teacher@example.org"

COUNT_TOKEN_EVENTS = """() => {
  window.__tokenEvents = 0;
  document.body.addEventListener('htmx:sseMessage', (e) => { if (e.detail && e.detail.type === 'token') window.__tokenEvents++; });
}"""


@pytest.fixture
def live_portal(browser_portal: LivePortal) -> tuple[LivePortal, Any]:
    return browser_portal, browser_portal.run(sample_library(browser_portal.app.state.runtime))


def tab_until(page: Any, predicate_js: str, limit: int = 60) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(predicate_js):
            return
    raise AssertionError(f"keyboard focus never reached: {predicate_js}")


def test_nurse_asks_by_keyboard_sees_streamed_cited_answer_and_opens_passage(
    chromium: Any, live_portal: tuple[LivePortal, Any]
) -> None:
    portal, (hygiene, algebra) = live_portal
    context = chromium.new_context()
    page = context.new_page()
    try:
        sign_in(page, portal.url, NURSE)
        page.wait_for_selector("#question")
        page.evaluate(COUNT_TOKEN_EVENTS)

        # Keyboard only: reach the question field, type, reach the Ask button, press Enter.
        tab_until(page, "() => document.activeElement && document.activeElement.id === 'question'")
        page.keyboard.type(QUESTION)
        tab_until(page, "() => document.activeElement && document.activeElement.textContent.trim() === 'Ask'")
        page.keyboard.press("Enter")

        page.wait_for_selector("#messages .answer-stream[aria-live='polite']", timeout=30_000)
        page.wait_for_selector("#messages .answer.status-complete", timeout=90_000)
        assert page.evaluate("() => window.__tokenEvents") > 3, "the answer should arrive as several token events"
        answer = page.locator("#messages .answer.status-complete").last
        assert answer.locator(".answer-body").inner_text().strip()
        assert answer.locator("[aria-live]").count() >= 1
        sources = answer.locator(".sources a")
        assert sources.count() >= 1 and hygiene.title in answer.locator(".sources").inner_text()
        assert algebra.title not in page.content()

        chat_problems = axe_violations(page)
        assert chat_problems == [], chat_problems

        # Open the cited passage by keyboard.
        tab_until(page, "() => document.activeElement && document.activeElement.closest('.sources') !== null")
        page.keyboard.press("Enter")
        page.wait_for_selector("mark#cited-passage", timeout=15_000)
        passage_url = page.url
        assert hygiene.title in page.locator("h1").inner_text()
        assert page.locator("mark#cited-passage").inner_text().strip()
        passage_problems = axe_violations(page)
        assert passage_problems == [], passage_problems
    finally:
        context.close()

    # A teacher cannot read clinical policies: neither the passage nor an answer from it.
    context = chromium.new_context()
    page = context.new_page()
    try:
        sign_in(page, portal.url, TEACHER)
        response = page.goto(passage_url)
        assert response is not None and response.status == 404
        assert "wash their hands" not in page.content()
        page.goto(f"{portal.url}/chat")
        page.fill("#question", QUESTION + " hand hygiene soap gloves")
        page.click("button:has-text('Ask')")
        page.wait_for_selector("#messages .answer:not(.streaming)", timeout=90_000)
        assert hygiene.title not in page.content()
        assert "wash their hands with soap" not in page.content()
    finally:
        context.close()
