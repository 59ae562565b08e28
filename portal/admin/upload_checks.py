"""Checks an upload passes at the door, decided by the bytes: size, real type, archive bombs, a safe name.

They are cheap (no full parse): a bad file is refused in the request with a clear message and nothing is
stored; the background job's full parse catches whatever is left (a PDF with no text, for example).
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile

from portal.admin.errors import BadInput, TooLarge, Unsupported
from rag.errors import DocumentRejected
from rag.parse import MIME_DOCX, MIME_PDF, decode_text, detect_mime_type

MAX_ZIP_ENTRIES = 2_000
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
# Real Word documents compress text by 5-20x; 100x and more is what archive bombs look like.
MAX_COMPRESSION_RATIO = 100
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def display_name(client_filename: str | None) -> str:
    """The name shown to people: the last path component, without control characters, at most 200 characters.

    It is only ever displayed and stored in the database; files on disk are named by their content hash.
    """
    raw = unicodedata.normalize("NFC", client_filename or "")
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("", name).strip().lstrip(".").strip()
    return name[:200] or "upload"


def _check_zip(name: str, data: bytes) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise Unsupported(f"{name}: the file looks like a Word document but the archive is damaged.") from None
    if len(entries) > MAX_ZIP_ENTRIES:
        raise TooLarge(f"{name}: the archive holds {len(entries):,} entries (more than {MAX_ZIP_ENTRIES:,}); it looks like an archive bomb.")
    expanded = sum(entry.file_size for entry in entries)
    if expanded > MAX_UNCOMPRESSED_BYTES or expanded > max(len(data), 1) * MAX_COMPRESSION_RATIO:
        raise TooLarge(
            f"{name}: the archive would expand to {expanded:,} bytes from {len(data):,}; it looks like an archive bomb."
        )
    if "word/document.xml" not in {entry.filename for entry in entries}:
        raise Unsupported(f"{name}: the file is a zip archive, not a Word (.docx) document.")


def _check_pdf(name: str, data: bytes) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted
    except (PdfReadError, ValueError, KeyError, OSError):
        raise Unsupported(f"{name}: the PDF is damaged and cannot be read.") from None
    if encrypted:
        raise Unsupported(f"{name}: the PDF is protected with a password; upload an unprotected copy.")


def check_upload(client_filename: str | None, data: bytes, max_bytes: int) -> str:
    """Refuse a bad upload with a plain-words reason; return the detected MIME type of a good one."""
    name = display_name(client_filename)
    if len(data) > max_bytes:
        raise TooLarge(
            f"{name}: the file is {len(data) / 1_048_576:.1f} MB, over the limit of {max_bytes / 1_048_576:.0f} MB."
        )
    if not data.strip():
        raise BadInput(f"{name}: the file is empty.")
    mime = detect_mime_type(data)
    if mime == MIME_DOCX:
        _check_zip(name, data)
    elif mime == MIME_PDF:
        _check_pdf(name, data)
    else:
        try:
            decode_text(data[:262_144], name)
        except DocumentRejected:
            raise Unsupported(
                f"{name}: the file is not a supported type (PDF, Word .docx, HTML, Markdown or plain text), "
                "whatever its name says."
            ) from None
    return mime
