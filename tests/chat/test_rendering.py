"""Answers are untrusted text: markdown is rendered, but no raw HTML, script, remote image or javascript: link."""

from __future__ import annotations

from portal.chat.rendering import render_answer
from portal.chat.sse import sse_event, token_event


def test_markdown_is_rendered() -> None:
    html = str(render_answer("**Wash** hands:\n\n- before\n- after"))
    assert "<strong>Wash</strong>" in html and "<li>before</li>" in html


def test_raw_html_is_escaped_not_rendered() -> None:
    html = str(render_answer('Hello <script>alert(1)</script> <img src=x onerror="alert(1)"> <b>bold</b>'))
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html


def test_javascript_and_data_links_are_removed() -> None:
    for url in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html;base64,PHNjcmlwdD4=", "vbscript:x"):
        html = str(render_answer(f"[click]({url})"))
        assert "href" not in html.lower() or url.split(":")[0].lower() not in html.lower(), html


def test_remote_images_are_never_embedded() -> None:
    html = str(render_answer("![tracker](https://evil.example/pixel.png)"))
    assert "<img" not in html


def test_safe_links_keep_rel_noopener() -> None:
    html = str(render_answer("[policy](https://intranet.example/policy)"))
    assert 'href="https://intranet.example/policy"' in html and "noopener" in html


def test_citations_link_only_to_allowed_sources() -> None:
    html = str(render_answer("Wash 40 seconds [1]. Gloves [2]. Made up [7].", {1: "/chat/passages/a%3A1", 2: "/chat/passages/b"}))
    assert '<a href="/chat/passages/a%3A1" class="citation"' in html
    assert '<a href="/chat/passages/b" class="citation"' in html
    assert "[7]" in html  # a number with no source the reader may see stays plain text


def test_citation_inside_code_is_left_alone() -> None:
    html = str(render_answer("`array[1]`", {1: "/chat/passages/a"}))
    assert "citation" not in html


def test_sse_token_events_are_escaped_and_multiline() -> None:
    raw = token_event("<b>hi</b>\nnext")
    assert raw == b"event: token\ndata: &lt;b&gt;hi&lt;/b&gt;\ndata: next\n\n"
    assert sse_event("done", "x") == b"event: done\ndata: x\n\n"
