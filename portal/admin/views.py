"""What the admin pages show: read-only queries gathered into plain records for the templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.access import managed_collection_ids
from portal.db.models import (
    Collection,
    CollectionAccess,
    CollectionManager,
    Document,
    DocumentChunk,
    IngestionJob,
    User,
)
from portal.principal import Principal

IN_FLIGHT = ("queued", "parsing", "embedding")


@dataclass
class CollectionSummary:
    collection: Collection
    readers: list[str]
    documents: int = 0
    indexed: int = 0
    in_flight: int = 0
    failed: int = 0


@dataclass
class ManagerEntry:
    id: str
    role: str | None
    person: str | None


@dataclass
class CollectionPage:
    collection: Collection
    readers: list[str]
    managers: list[ManagerEntry]
    documents: list[Document]
    stages: dict[str, str] = field(default_factory=dict)  # document id -> running job stage

    @property
    def in_flight(self) -> bool:
        return any(d.status in IN_FLIGHT for d in self.documents)


@dataclass
class DocumentPage:
    document: Document
    collection: Collection
    readers: list[str]
    chunks: list[DocumentChunk]
    jobs: list[IngestionJob]
    uploader: str | None
    pending: dict[str, Any] | None  # the replacement file a queued/running job brings


async def readers_by_collection(session: AsyncSession, collection_ids: list[str]) -> dict[str, list[str]]:
    readers: dict[str, list[str]] = {cid: [] for cid in collection_ids}
    if collection_ids:
        rows = await session.execute(
            select(CollectionAccess.collection_id, CollectionAccess.role)
            .where(CollectionAccess.collection_id.in_(collection_ids))
            .order_by(CollectionAccess.role)
        )
        for cid, role in rows.all():
            readers[cid].append(role)
    return readers


async def collection_summaries(session: AsyncSession, principal: Principal) -> list[CollectionSummary]:
    """The collections this person manages (all of them for an admin), with document counts by status."""
    ids = sorted(await managed_collection_ids(session, principal))
    if not ids:
        return []
    collections = (await session.execute(select(Collection).where(Collection.id.in_(ids)).order_by(Collection.name))).scalars().all()
    readers = await readers_by_collection(session, ids)
    summaries = {c.id: CollectionSummary(c, readers[c.id]) for c in collections}
    rows = await session.execute(
        select(Document.collection_id, Document.status, func.count())
        .where(Document.collection_id.in_(ids))
        .group_by(Document.collection_id, Document.status)
    )
    for cid, status, number in rows.all():
        summary = summaries[cid]
        summary.documents += number
        if status == "indexed":
            summary.indexed += number
        elif status == "failed":
            summary.failed += number
        else:
            summary.in_flight += number
    return list(summaries.values())


async def collection_page(session: AsyncSession, collection_id: str) -> CollectionPage | None:
    collection = await session.get(Collection, collection_id)
    if collection is None:
        return None
    readers = (await readers_by_collection(session, [collection_id]))[collection_id]
    manager_rows = (
        await session.execute(
            select(CollectionManager, User.email, User.display_name)
            .outerjoin(User, User.id == CollectionManager.user_id)
            .where(CollectionManager.collection_id == collection_id)
        )
    ).all()
    managers = [
        ManagerEntry(m.id, m.role, (email or name) if m.user_id else None) for m, email, name in manager_rows
    ]
    documents = list(
        (await session.execute(
            select(Document).where(Document.collection_id == collection_id).order_by(Document.filename)
        )).scalars()
    )
    stage_rows = await session.execute(
        select(IngestionJob.document_id, IngestionJob.stage).where(
            IngestionJob.collection_id == collection_id, IngestionJob.status == "running"
        )
    )
    stages = {str(doc_id): str(stage or "") for doc_id, stage in stage_rows.all() if doc_id}
    return CollectionPage(collection, readers, managers, documents, stages)


async def document_page(session: AsyncSession, document_id: str, chunk_limit: int = 300) -> DocumentPage | None:
    document = await session.get(Document, document_id)
    if document is None:
        return None
    collection = await session.get(Collection, document.collection_id)
    assert collection is not None
    readers = (await readers_by_collection(session, [collection.id]))[collection.id]
    chunks = list(
        (await session.execute(
            select(DocumentChunk)
            .where(DocumentChunk.document_id == document_id, DocumentChunk.version == document.version)
            .order_by(DocumentChunk.ordinal)
            .limit(chunk_limit)
        )).scalars()
    )
    jobs = list(
        (await session.execute(
            select(IngestionJob).where(IngestionJob.document_id == document_id).order_by(IngestionJob.created_at.desc()).limit(5)
        )).scalars()
    )
    uploader = None
    if document.uploaded_by:
        user = await session.get(User, document.uploaded_by)
        uploader = (user.email or user.display_name) if user else None
    pending = next(
        ((job.payload or {}).get("replacement") for job in jobs if job.status in ("queued", "running")), None
    )
    return DocumentPage(document, collection, readers, chunks, jobs, uploader, pending)
