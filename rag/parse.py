"""Turn an uploaded file into titled, sectioned, paged text; refuse anything unsafe or unreadable.

The format is decided by the bytes, never by the file name: a PDF renamed ``.txt`` is parsed as a
PDF, and an executable renamed ``.txt`` is refused as binary.
"""

from __future__ import annotations

import codecs
import os
import re

from rag.errors import DocumentRejected
from rag.parse_formats import parse_docx, parse_html, parse_pdf
from rag.types import ParsedBlock, ParsedDocument, ParseLimits

MIME_PDF = "application/pdf"
MIME_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MIME_HTML = "text/html"
MIME_MARKDOWN = "text/markdown"
MIME_TEXT = "text/plain"

_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_MD_SIGNALS = re.compile(r"^(#{1,6}\s|\s*[-*+]\s|\s*\d+\.\s|```|>\s)|\[[^\]]+\]\([^)]+\)", re.MULTILINE)
# Control characters other than tab, newline, carriage return and form feed mark binary data.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def detect_mime_type(data: bytes) -> str:
    head = data[:2048]
    if head.lstrip(b"\x00\t\r\n ").startswith(b"%PDF-"):
        return MIME_PDF
    if head.startswith(b"PK\x03\x04"):
        return MIME_DOCX  # confirmed (or refused) by the DOCX reader, which checks the entries
    if _HTML_START.match(head.lstrip(codecs.BOM_UTF8)):
        return MIME_HTML
    return MIME_TEXT  # markdown or plain text, told apart after decoding


def decode_text(data: bytes, filename: str) -> str:
    """Decode text, refusing binary data that merely has a text-like name."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            if b"\x00" in data:
                raise DocumentRejected(filename, "the file is binary data, not text") from None
            # Legacy single-byte text (Windows-1252 is a superset of Latin-1's printable range).
            text = data.decode("cp1252", errors="replace")
    sample = text[:65536]
    if sample and len(_CONTROL.findall(sample)) > max(2, len(sample) // 1000):
        raise DocumentRejected(filename, "the file is binary data, not text")
    return text


def _looks_like_markdown(text: str) -> bool:
    return len(_MD_SIGNALS.findall(text[:20000])) >= 2 or bool(_MD_HEADING.match(text.lstrip().split("\n", 1)[0]))


def _paragraphs(text: str) -> list[str]:
    return [re.sub(r"[ \t]+", " ", part).strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def parse_plain_text(text: str) -> tuple[str, list[ParsedBlock]]:
    paragraphs = _paragraphs(text)
    title = paragraphs[0].split("\n", 1)[0][:200] if paragraphs else ""
    return title, [ParsedBlock(text=p) for p in paragraphs]


def parse_markdown(text: str) -> tuple[str, list[ParsedBlock]]:
    """Headings become the section path of the blocks under them; everything else is body text."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    lines = text.splitlines()
    blocks: list[ParsedBlock] = []
    path: list[tuple[int, str]] = []
    title = ""
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open":
            level = int(token.tag[1])
            heading = tokens[index + 1].content.strip()
            path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, heading)]
            title = title or heading
            blocks.append(ParsedBlock(text=heading, heading_path=tuple(n for _, n in path), is_heading=True))
            index += 3
            continue
        # Top-level leaf blocks (paragraphs, lists, tables, code) are copied from the source lines,
        # so list markers and table rows keep their meaning.
        if token.level == 0 and token.map and token.type != "heading_open":
            start, end = token.map
            body = "\n".join(lines[start:end]).strip()
            if body:
                blocks.append(ParsedBlock(text=body, heading_path=tuple(n for _, n in path)))
            depth = 0
            while index < len(tokens):
                depth += tokens[index].nesting
                index += 1
                if depth <= 0:
                    break
            continue
        index += 1
    if not title and blocks:
        title = blocks[0].text.split("\n", 1)[0][:200]
    return title, blocks


def parse_document(data: bytes, filename: str, limits: ParseLimits | None = None) -> ParsedDocument:
    """Parse one uploaded file; raise ``DocumentRejected(filename, reason)`` when it cannot be used."""
    limits = limits or ParseLimits()
    if len(data) > limits.max_file_bytes:
        raise DocumentRejected(
            filename,
            f"the file is {len(data):,} bytes, over the limit of {limits.max_file_bytes:,} bytes",
        )
    if not data.strip():
        raise DocumentRejected(filename, "the file is empty")
    mime = detect_mime_type(data)
    page_count: int | None = None
    if mime == MIME_PDF:
        title, blocks, page_count = parse_pdf(data, filename, limits)
    elif mime == MIME_DOCX:
        title, blocks = parse_docx(data, filename, limits)
    else:
        text = decode_text(data, filename)
        if len(text) > limits.max_text_chars:
            raise DocumentRejected(filename, f"the text is over {limits.max_text_chars:,} characters")
        if mime == MIME_HTML:
            title, blocks = parse_html(text, filename)
        elif _looks_like_markdown(text):
            mime = MIME_MARKDOWN
            title, blocks = parse_markdown(text)
        else:
            title, blocks = parse_plain_text(text)
    blocks = [block for block in blocks if block.text.strip()]
    if not any(not block.is_heading for block in blocks):
        raise DocumentRejected(filename, "no readable text was found in the file")
    if sum(len(block.text) for block in blocks) > limits.max_text_chars:
        raise DocumentRejected(filename, f"the text is over {limits.max_text_chars:,} characters")
    title = (title or os.path.splitext(os.path.basename(filename))[0]).strip()
    return ParsedDocument(title=title, mime_type=mime, blocks=tuple(blocks), page_count=page_count)
