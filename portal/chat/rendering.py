"""Answers as safe HTML: markdown-it (raw HTML off) then nh3, with [n] turned into links to the passage view.

The model's output is untrusted text: it can echo a hostile document. Nothing it writes may become markup,
a script, a remote image or a javascript: link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from urllib.parse import quote

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markupsafe import Markup

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")

ALLOWED_TAGS = {
    "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a", "sup", "del",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "class", "title"}, "th": {"style"}, "td": {"style"}, "ol": {"start"}}
# Only links a person can follow safely: no javascript:, data:, vbscript: or file: URLs.
ALLOWED_URL_SCHEMES = {"http", "https", "mailto"}


def passage_url(chunk_id: str) -> str:
    return f"/chat/passages/{quote(chunk_id, safe='')}"


def _citation_rule(state: StateCore) -> None:
    """Split text tokens on [n] and link each n the caller allowed (env["citations"]: number -> URL)."""
    links: Mapping[int, str] = state.env.get("citations", {})
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children: list[Token] = []
        for token in block.children:
            if token.type != "text" or "[" not in token.content:
                children.append(token)
                continue
            position = 0
            for match in _CITATION.finditer(token.content):
                if match.start() > position:
                    children.append(_text(token.content[position : match.start()]))
                children.extend(_citation_tokens(match.group(1), links))
                position = match.end()
            if position < len(token.content):
                children.append(_text(token.content[position:]))
        block.children = children


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def _citation_tokens(numbers: str, links: Mapping[int, str]) -> list[Token]:
    tokens: list[Token] = [_text("[")]
    for i, part in enumerate(numbers.split(",")):
        if i:
            tokens.append(_text(", "))
        number = int(part)
        url = links.get(number)
        if url is None:  # a number the model made up, or a source the reader may no longer see
            tokens.append(_text(str(number)))
            continue
        opening = Token("link_open", "a", 1)
        opening.attrs = {"href": url, "class": "citation", "title": f"Open source {number}"}
        closing = Token("link_close", "a", -1)
        tokens.extend([opening, _text(str(number)), closing])
    tokens.append(_text("]"))
    return tokens


@cache
def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.disable("image")  # an image is a request to a remote server the moment the page renders
    md.core.ruler.push("enclave_citations", _citation_rule)
    return md


def render_answer(text: str, citation_links: Mapping[int, str] | None = None) -> Markup:
    """Markdown answer -> sanitised HTML. `citation_links` maps source numbers to passage URLs."""
    html = _markdown().render(text, {"citations": dict(citation_links or {})})
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
    return Markup(clean)  # noqa: S704 - the output of the sanitiser above
