"""Parsing: formats are told apart by content, structure is kept, and bad files get a plain reason."""

from __future__ import annotations

import os

import pytest

from rag.errors import DocumentRejected
from rag.parse import MIME_DOCX, MIME_HTML, MIME_MARKDOWN, MIME_PDF, MIME_TEXT, parse_document
from rag.types import ParseLimits
from tests.rag.documents import encrypt_pdf, make_docx, make_many_entry_zip, make_pdf, make_zip_bomb

POLICY_PDF = make_pdf(
    [
        ["Policy 5141 Student Health.", "Nurses keep records of every visit."],
        ["Section 3 Medication.", "Medication is kept locked in the nurse office."],
    ],
    title="Policy 5141",
)


def test_pdf_keeps_title_and_page_numbers() -> None:
    parsed = parse_document(POLICY_PDF, "policy.pdf")
    assert parsed.mime_type == MIME_PDF
    assert parsed.title == "Policy 5141"
    assert parsed.page_count == 2
    locked = [block for block in parsed.blocks if "locked" in block.text]
    assert locked and locked[0].page == 2
    assert any(block.page == 1 and "records" in block.text for block in parsed.blocks)


def test_type_is_decided_by_content_not_name() -> None:
    assert parse_document(POLICY_PDF, "innocent.txt").mime_type == MIME_PDF
    docx_bytes = make_docx("Handbook", [("Intro", ["Welcome."])])
    assert parse_document(docx_bytes, "handbook.pdf").mime_type == MIME_DOCX


def test_docx_keeps_headings_as_sections_and_tables() -> None:
    data = make_docx(
        "Staff Handbook",
        [("Leave", ["Annual leave is 25 days."]), ("Sickness", ["Call the ward before 7am."])],
        table=[["Grade", "Days"], ["Band 5", "27"]],
    )
    parsed = parse_document(data, "handbook.docx")
    assert parsed.title == "Staff Handbook"
    leave = next(block for block in parsed.blocks if block.text.startswith("Annual leave"))
    assert leave.heading_path == ("Staff Handbook", "Leave")
    sick = next(block for block in parsed.blocks if block.text.startswith("Call the ward"))
    assert sick.section == "Staff Handbook > Sickness"
    assert any("Band 5 | 27" in block.text for block in parsed.blocks)


def test_markdown_headings_become_section_paths() -> None:
    text = b"# Attendance Policy\n\nIntro text.\n\n## Absences\n\nCall the office.\n\n- by 9am\n- with a reason\n"
    parsed = parse_document(text, "attendance.txt")
    assert parsed.mime_type == MIME_MARKDOWN
    assert parsed.title == "Attendance Policy"
    call = next(block for block in parsed.blocks if block.text == "Call the office.")
    assert call.heading_path == ("Attendance Policy", "Absences")
    assert any("- by 9am" in block.text for block in parsed.blocks)


def test_html_main_text_and_title() -> None:
    html = (
        "<!DOCTYPE html><html><head><title>Visitor Policy</title></head><body>"
        "<nav><a href='/'>Home</a></nav><main><h1>Visitors</h1>"
        + "<p>Visiting hours are from two until eight every day of the week on all general wards.</p>" * 3
        + "<h2>Children</h2><p>Children under twelve must be accompanied by an adult at all times.</p>"
        "</main></body></html>"
    ).encode()
    parsed = parse_document(html, "visitors.bin")
    assert parsed.mime_type == MIME_HTML
    assert parsed.title == "Visitors"  # the page heading, as trafilatura prefers it to <title>
    assert "Visiting hours" in parsed.text
    assert "Children under twelve" in parsed.text


def test_plain_text_paragraphs_and_legacy_encoding() -> None:
    parsed = parse_document("Caf\xe9 rules\n\nNo food after 8pm.".encode("cp1252"), "rules.txt")
    assert parsed.mime_type == MIME_TEXT
    assert parsed.title == "Café rules"
    assert [block.text for block in parsed.blocks] == ["Café rules", "No food after 8pm."]


def rejected(data: bytes, filename: str, limits: ParseLimits | None = None) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as info:
        parse_document(data, filename, limits)
    assert info.value.filename == filename
    assert filename in str(info.value)
    return info.value


def test_encrypted_pdf_is_rejected() -> None:
    error = rejected(encrypt_pdf(POLICY_PDF, "secret"), "locked.pdf")
    assert "encrypted" in error.reason


def test_truncated_pdf_is_rejected() -> None:
    error = rejected(POLICY_PDF[: len(POLICY_PDF) // 2], "cut.pdf")
    assert "truncated" in error.reason


def test_malformed_pdf_is_rejected() -> None:
    error = rejected(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >> garbage\ntrailer <<>>\n%%EOF\n", "bad.pdf")
    assert "PDF" in error.reason


def test_docx_zip_bomb_is_rejected_by_size() -> None:
    # 201 MiB of zeros compress to about 200 KB: over the default 200 MiB cap.
    error = rejected(make_zip_bomb(201 * 1024 * 1024), "bomb.docx")
    assert "zip bomb" in error.reason


def test_docx_with_too_many_entries_is_rejected() -> None:
    error = rejected(make_many_entry_zip(2_100), "many.docx")
    assert "entries" in error.reason


def test_zip_that_is_not_a_word_document_is_rejected() -> None:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", b"\xff\xd8")
    error = rejected(out.getvalue(), "archive.docx")
    assert "not a Word" in error.reason


@pytest.mark.parametrize("data", [b"", b"   \n\t\n"])
def test_empty_file_is_rejected(data: bytes) -> None:
    error = rejected(data, "empty.txt")
    assert "empty" in error.reason


def test_binary_posing_as_text_is_rejected() -> None:
    data = b"\x7fELF\x02\x01\x01\x00" + os.urandom(4096)
    error = rejected(data, "notes.txt")
    assert "binary" in error.reason


def test_oversize_file_is_rejected() -> None:
    error = rejected(b"word " * 100, "big.txt", ParseLimits(max_file_bytes=100))
    assert "over the limit" in error.reason


def test_heading_only_file_is_rejected() -> None:
    error = rejected(b"# Just a title\n", "title.md")
    assert "no readable text" in error.reason
