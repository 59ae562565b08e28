"""What a person sees of an answer and of a passage, with every citation re-checked against what they may read now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.access import can_manage_collection, can_read_document
from portal.chat.rendering import passage_url, render_answer
from portal.db.models import Citation, Document, DocumentChunk, Feedback, Message
from portal.principal import Principal

NOTICE_BY_STATUS = {
    "incomplete": "This answer was stopped before it finished; what arrived is kept.",
    "streaming": "This answer is still being written in another window or tab.",
}


@dataclass(frozen=True)
class SourceView:
    number: int
    chunk_id: str
    document_id: str
    title: str
    where: str
    excerpt: str
    cited: bool

    @property
    def url(self) -> str:
        return passage_url(self.chunk_id)


@dataclass
class AnswerView:
    """One answer bubble: finished (rendered markdown) or still to stream (`stream_url`)."""

    answer_id: str
    status: str
    content: str = ""
    notice: str | None = None
    sources: list[SourceView] = field(default_factory=list)
    withheld_sources: int = 0  # sources the person may no longer read: neither shown nor linked
    model: str | None = None
    ephemeral: bool = False
    stream_url: str | None = None
    feedback_rating: int | None = None
    feedback_comment: str = ""
    retryable: bool = False

    @property
    def html(self) -> Markup:
        return render_answer(self.content, {s.number: s.url for s in self.sources})

    @property
    def finished(self) -> bool:
        return self.status in ("complete", "incomplete", "failed")


def where_text(section: str | None, page: int | None) -> str:
    return ", ".join(part for part in (section or "", f"page {page}" if page else "") if part)


def excerpt_of(text: str, width: int = 220) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


class ReadableDocuments:
    """Caches can_read_document per document for one page render (the same document is often cited twice)."""

    def __init__(self, session: AsyncSession, principal: Principal, now: datetime) -> None:
        self._session, self._principal, self._now = session, principal, now
        self._known: dict[str, bool] = {}

    async def allows(self, document_id: str) -> bool:
        if document_id not in self._known:
            self._known[document_id] = await can_read_document(self._session, self._principal, document_id, self._now)
        return self._known[document_id]


async def source_views(
    session: AsyncSession, readable: ReadableDocuments, citations: Sequence[Citation]
) -> tuple[list[SourceView], int]:
    """Citations -> sources the person may read now, and how many were withheld."""
    allowed = [c for c in citations if await readable.allows(c.document_id)]
    if not allowed:
        return [], len(citations)
    chunk_rows = await session.execute(
        select(DocumentChunk.id, DocumentChunk.text, DocumentChunk.section, DocumentChunk.page).where(
            DocumentChunk.id.in_([c.chunk_id for c in allowed])
        )
    )
    chunks = {row.id: row for row in chunk_rows.all()}
    title_rows = await session.execute(
        select(Document.id, Document.title).where(Document.id.in_({c.document_id for c in allowed}))
    )
    titles: dict[str, str] = {row.id: row.title for row in title_rows.all()}
    views = []
    for citation in allowed:
        chunk = chunks.get(citation.chunk_id)
        views.append(
            SourceView(
                number=citation.ordinal,
                chunk_id=citation.chunk_id,
                document_id=citation.document_id,
                title=titles.get(citation.document_id) or "Untitled document",
                where=where_text(chunk.section, chunk.page) if chunk else "",
                excerpt=excerpt_of(chunk.text) if chunk else "This passage has since been replaced by a newer version.",
                cited=citation.cited,
            )
        )
    return views, len(citations) - len(allowed)


async def stored_answer_view(
    session: AsyncSession,
    readable: ReadableDocuments,
    message: Message,
    citations: Sequence[Citation],
    feedback: Feedback | None = None,
) -> AnswerView:
    sources, withheld = await source_views(session, readable, citations)
    view = AnswerView(
        answer_id=message.id,
        status=message.status,
        content=message.content,
        notice=message.error or NOTICE_BY_STATUS.get(message.status),
        sources=sources,
        withheld_sources=withheld,
        model=message.model,
        feedback_rating=feedback.rating if feedback else None,
        feedback_comment=feedback.comment if feedback else "",
        retryable=message.status == "failed",
    )
    if message.status == "pending":
        view.stream_url = f"/chat/stream/{message.id}"
    return view


@dataclass(frozen=True)
class PassageView:
    chunk_id: str
    document_id: str
    document_title: str
    filename: str
    where: str
    before: list[str]
    passage: str
    after: list[str]
    document_url: str | None


async def passage_view(
    session: AsyncSession, principal: Principal, chunk_id: str, now: datetime, context_chunks: int = 1
) -> PassageView | None:
    """The passage with its neighbours, or None when it does not exist or the person may not read it."""
    chunk = await session.get(DocumentChunk, chunk_id)
    if chunk is None or not await can_read_document(session, principal, chunk.document_id, now):
        return None
    document = await session.get(Document, chunk.document_id)
    if document is None:
        return None
    rows = await session.execute(
        select(DocumentChunk)
        .where(
            DocumentChunk.document_id == chunk.document_id,
            DocumentChunk.version == chunk.version,
            DocumentChunk.ordinal.between(chunk.ordinal - context_chunks, chunk.ordinal + context_chunks),
        )
        .order_by(DocumentChunk.ordinal)
    )
    neighbours = rows.scalars().all()
    return PassageView(
        chunk_id=chunk.id,
        document_id=document.id,
        document_title=document.title or document.filename,
        filename=document.filename,
        where=where_text(chunk.section, chunk.page),
        before=[c.text for c in neighbours if c.ordinal < chunk.ordinal],
        passage=chunk.text,
        after=[c.text for c in neighbours if c.ordinal > chunk.ordinal],
        # Readers see the passage; those who manage the collection also get the document's own page.
        document_url=f"/admin/documents/{document.id}"
        if await can_manage_collection(session, principal, document.collection_id)
        else None,
    )
