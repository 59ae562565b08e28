"""Readers for the binary and markup formats (PDF, DOCX, HTML), each refusing unsafe input early."""

from __future__ import annotations

import io
import logging
import re
import zipfile

from rag.errors import DocumentRejected
from rag.types import ParsedBlock, ParseLimits

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _paragraph_blocks(text: str, page: int | None, heading_path: tuple[str, ...] = ()) -> list[ParsedBlock]:
    parts = re.split(r"\n\s*\n", text)
    if len(parts) == 1:
        # PDF text often has no blank lines; fall back to line breaks after sentence ends.
        parts = re.split(r"(?<=[.!?:])\s*\n", text)
    blocks = []
    for part in parts:
        cleaned = re.sub(r"[ \t]+", " ", part).strip()
        if cleaned:
            blocks.append(ParsedBlock(text=cleaned, heading_path=heading_path, page=page))
    return blocks


def parse_pdf(data: bytes, filename: str, limits: ParseLimits) -> tuple[str, list[ParsedBlock], int]:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import PdfReadError

    # pypdf quietly rebuilds a cut-off file's cross-reference table; a PDF without its end
    # marker is an interrupted upload, and indexing part of it would mislead readers.
    if b"%%EOF" not in data[-2048:]:
        raise DocumentRejected(filename, "the PDF is truncated (its end-of-file marker is missing)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # An empty user password only restricts printing or copying; anything else is locked.
            try:
                unlocked = reader.decrypt("") != PasswordType.NOT_DECRYPTED
            except Exception:
                unlocked = False
            if not unlocked:
                raise DocumentRejected(filename, "the PDF is encrypted with a password")
        page_count = len(reader.pages)
        if page_count == 0:
            raise DocumentRejected(filename, "the PDF has no pages")
        if page_count > limits.max_pdf_pages:
            raise DocumentRejected(filename, f"the PDF has {page_count:,} pages, over the limit of {limits.max_pdf_pages:,}")
        blocks: list[ParsedBlock] = []
        for number, page in enumerate(reader.pages, start=1):
            blocks.extend(_paragraph_blocks(page.extract_text() or "", number))
        metadata_title = ""
        if reader.metadata is not None and reader.metadata.title:
            metadata_title = str(reader.metadata.title).strip()
    except DocumentRejected:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise DocumentRejected(filename, f"the PDF is damaged and cannot be read ({type(exc).__name__})") from exc
    except Exception as exc:  # pypdf raises assorted errors on hostile files; none may escape raw
        raise DocumentRejected(filename, f"the PDF cannot be read ({type(exc).__name__})") from exc
    if not blocks:
        raise DocumentRejected(filename, "the PDF contains no extractable text (it may be a scan)")
    title = metadata_title or blocks[0].text.split("\n", 1)[0][:200]
    return title, blocks, page_count


def _check_zip(data: bytes, filename: str, limits: ParseLimits) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DocumentRejected(filename, "the file looks like a Word document but the archive is damaged") from exc
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_zip_entries:
            raise DocumentRejected(
                filename, f"the archive has {len(entries):,} entries, over the limit of {limits.max_zip_entries:,}"
            )
        # Declared sizes are what zipfile will read at most, so summing them caps the real work.
        total = sum(entry.file_size for entry in entries)
        if total > limits.max_uncompressed_bytes:
            raise DocumentRejected(
                filename,
                f"the document expands to {total:,} bytes, over the limit of {limits.max_uncompressed_bytes:,} "
                "(a possible zip bomb)",
            )
        names = {entry.filename for entry in entries}
        if "word/document.xml" not in names or "[Content_Types].xml" not in names:
            raise DocumentRejected(filename, "the file is a zip archive, not a Word (.docx) document")


def parse_docx(data: bytes, filename: str, limits: ParseLimits) -> tuple[str, list[ParsedBlock]]:
    _check_zip(data, filename, limits)
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx surfaces XML, zip and key errors alike
        raise DocumentRejected(filename, f"the Word document is damaged ({type(exc).__name__})") from exc
    blocks: list[ParsedBlock] = []
    path: list[tuple[int, str]] = []
    title = (document.core_properties.title or "").strip()
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [" | ".join(cell.text.strip() for cell in row.cells) for row in item.rows]
            text = "\n".join(row for row in rows if row.strip(" |"))
            if text:
                blocks.append(ParsedBlock(text=text, heading_path=tuple(n for _, n in path)))
            continue
        text = item.text.strip()
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        match = _HEADING_STYLE.match(style)
        if match or style.lower() == "title":
            level = int(match.group(1)) if match else 0
            if level == 0:
                title = title or text
            path = [(lvl, name) for lvl, name in path if lvl < level] + [(level, text)]
            blocks.append(ParsedBlock(text=text, heading_path=tuple(n for _, n in path), is_heading=True))
        else:
            blocks.append(ParsedBlock(text=text, heading_path=tuple(n for _, n in path)))
    if not blocks:
        raise DocumentRejected(filename, "the Word document contains no text")
    return title or blocks[0].text[:200], blocks


def parse_html(html: str, filename: str) -> tuple[str, list[ParsedBlock]]:
    """Main content via trafilatura (drops menus and footers), kept as Markdown so headings survive."""
    import trafilatura

    from rag.parse import parse_markdown, parse_plain_text

    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    metadata = trafilatura.extract_metadata(html)
    page_title = (metadata.title or "") if metadata is not None else ""
    extracted = trafilatura.extract(
        html, output_format="markdown", include_tables=True, include_comments=False, favor_recall=True
    )
    if extracted:
        title, blocks = parse_markdown(extracted)
    else:
        # Very short pages fall below trafilatura's thresholds: take the visible text instead.
        import lxml.html

        try:
            root = lxml.html.fromstring(html)
        except Exception as exc:
            raise DocumentRejected(filename, "the HTML page cannot be read") from exc
        for element in root.xpath("//script|//style|//noscript"):
            element.drop_tree()
        title, blocks = parse_plain_text(root.text_content())
    return page_title or title, blocks
