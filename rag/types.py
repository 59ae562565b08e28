"""Plain data passed in and out of the rag library: parsed documents, chunks, filters, hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SearchMode = Literal["hybrid", "dense", "sparse"]


@dataclass(frozen=True, slots=True)
class ParsedBlock:
    """One paragraph-like unit of text with where it sits in the document."""

    text: str
    heading_path: tuple[str, ...] = ()
    page: int | None = None
    is_heading: bool = False

    @property
    def section(self) -> str:
        return " > ".join(self.heading_path)


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    title: str
    mime_type: str
    blocks: tuple[ParsedBlock, ...]
    page_count: int | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Caps that keep a hostile upload from exhausting memory or CPU."""

    max_file_bytes: int = 50 * 1024 * 1024
    # A DOCX is a zip: the sum of its uncompressed entries and their number are both capped.
    max_uncompressed_bytes: int = 200 * 1024 * 1024
    max_zip_entries: int = 2_000
    max_pdf_pages: int = 2_000
    max_text_chars: int = 20_000_000


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    document_id: str
    collection_id: str
    document_version: int
    ordinal: int
    text: str
    title: str
    section: str
    page: int | None
    token_count: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """What a search may see. Built by the portal from the session, never from the request.

    An empty ``collection_ids`` means the asker may read nothing: searches return no hits.
    """

    collection_ids: frozenset[str]
    excluded_document_ids: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # A plain set or a single string would silently become something else; insist on frozensets.
        if not isinstance(self.collection_ids, frozenset):
            raise TypeError("AccessFilter.collection_ids must be a frozenset of collection ids")
        if not isinstance(self.excluded_document_ids, frozenset):
            raise TypeError("AccessFilter.excluded_document_ids must be a frozenset of document ids")


@dataclass(frozen=True, slots=True)
class SearchHit:
    chunk_id: str
    document_id: str
    collection_id: str
    document_version: int
    ordinal: int
    score: float
    text: str
    title: str
    section: str
    page: int | None


@dataclass(frozen=True, slots=True)
class IndexResult:
    document_id: str
    document_version: int
    chunk_count: int
    title: str
