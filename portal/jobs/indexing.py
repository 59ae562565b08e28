"""Run one indexing job: parse -> chunk -> embed -> upsert the new version -> make it current -> drop the old one.

Parsing and chunking run in threads and embedding through the embedder's async methods (threads too), so the
event loop keeps serving pages while a document is indexed. The replace protocol keeps a concurrent question
from ever seeing both versions or neither: the new version's points are written under a new version number,
`documents.version` and the `document_chunks` rows flip to it in one transaction a grace period after the new
points exist, and the old version's points are deleted a grace period after the flip. A searcher keeps the hits
whose version is the document's current one, whether it reads that version just before searching (the old
points outlive the flip) or just after (the new points were there before the flip).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.clock import Clock
from portal.db.engine import transaction
from portal.db.models import Document, DocumentChunk, IngestionJob
from portal.jobs import job_store, stored_files
from portal.logging import get_logger
from rag.chunk import chunk_document
from rag.embed import Embedder
from rag.errors import DocumentRejected
from rag.ingest import store_chunks
from rag.parse import parse_document
from rag.sparse import Bm25Encoder
from rag.store import VectorStore
from rag.types import Chunk, ParseLimits

log = get_logger(__name__)

# rag's stage names -> the document status an administrator sees.
_DOCUMENT_STATUS = {"parsing": "parsing", "chunking": "embedding", "embedding": "embedding", "storing": "embedding"}
_PROGRESS_EVERY_S = 0.4
_HEARTBEAT_EVERY_S = 10.0


@dataclass
class IndexingContext:
    db: async_sessionmaker[AsyncSession]
    store: VectorStore
    embedder: Callable[[], Awaitable[Embedder]]
    clock: Clock
    files_root: Path
    max_upload_bytes: int
    worker_id: str
    # How long old points outlive the flip (see the module docstring); tests shorten it.
    old_version_grace_s: float = 3.0
    sparse_encoder: Bm25Encoder = field(default_factory=Bm25Encoder)


@dataclass(frozen=True)
class _Work:
    job_id: str
    document_id: str
    collection_id: str
    filename: str
    storage_path: str
    target_version: int
    replacement: dict[str, Any] | None  # the new file's fields when the job replaces the document's file
    previous_storage_path: str | None
    # The target version is already current: an earlier attempt flipped it and stopped before cleaning up.
    already_current: bool = False


class _Gone(Exception):
    """The document (or its job) was deleted while the job ran."""


async def _prepare(ctx: IndexingContext, job_id: str) -> _Work:
    async with transaction(ctx.db) as session:
        job = await session.get(IngestionJob, job_id)
        if job is None or job.document_id is None:
            raise _Gone
        document = await session.get(Document, job.document_id)
        if document is None:
            raise _Gone
        payload = dict(job.payload or {})
        # Reuse the version an interrupted attempt chose: re-running then rewrites the same point ids.
        target = int(payload.get("target_version") or 0)
        already_current = target > 0 and target == document.version and job.stage == "cleanup"
        if target <= document.version and not already_current:
            target = document.version + 1
            payload["target_version"] = target
            job.payload = payload
        replacement = payload.get("replacement")
        storage_path = replacement["storage_path"] if replacement else document.storage_path
        filename = replacement["filename"] if replacement else document.filename
        if not already_current:
            document.status = "parsing"
            document.progress = 0.0
            document.error = None
            job.stage = "parsing"
        if not storage_path:
            raise DocumentRejected(filename, "the stored file is missing")
        return _Work(
            job_id=job.id,
            document_id=document.id,
            collection_id=document.collection_id,
            filename=filename,
            storage_path=storage_path,
            target_version=target,
            replacement=replacement,
            previous_storage_path=payload.get("previous_storage_path") if already_current else (
                document.storage_path if replacement else None
            ),
            already_current=already_current,
        )


def _chunk_rows(chunks: list[Chunk]) -> list[DocumentChunk]:
    return [
        DocumentChunk(
            id=chunk.chunk_id,
            document_id=chunk.document_id,
            version=chunk.document_version,
            ordinal=chunk.ordinal,
            text=chunk.text,
            section=chunk.section or None,
            page=chunk.page,
            token_count=chunk.token_count,
            content_hash=chunk.content_hash,
        )
        for chunk in chunks
    ]


async def _flip(ctx: IndexingContext, work: _Work, chunks: list[Chunk], title: str, mime_type: str) -> None:
    """Make the new version current: document row, chunk rows and job in ONE transaction."""
    now = ctx.clock.now()
    async with transaction(ctx.db) as session:
        document = await session.get(Document, work.document_id)
        job = await session.get(IngestionJob, work.job_id)
        if document is None or job is None:
            raise _Gone
        await session.execute(delete(DocumentChunk).where(DocumentChunk.document_id == work.document_id))
        session.add_all(_chunk_rows(chunks))
        document.version = work.target_version
        document.chunk_count = len(chunks)
        document.status = "indexed"
        document.progress = 1.0
        document.error = None
        document.title = title or document.title
        document.mime_type = mime_type
        document.indexed_at = now
        document.updated_at = now
        if work.replacement:
            document.filename = work.replacement["filename"]
            document.storage_path = work.replacement["storage_path"]
            document.content_hash = work.replacement["content_hash"]
            document.size_bytes = int(work.replacement["size_bytes"])
        # The job stays running until the old version's points are gone (see _drop_old_version).
        job.stage = "cleanup"
        job.progress = 1.0
        job.error = None
        job.heartbeat_at = now
        job.payload = {**(job.payload or {}), "previous_storage_path": work.previous_storage_path}


async def _finish(ctx: IndexingContext, job_id: str) -> None:
    async with transaction(ctx.db) as session:
        job = await session.get(IngestionJob, job_id)
        if job is None:
            return
        job.status = "done"
        job.stage = "done"
        job.progress = 1.0
        job.finished_at = ctx.clock.now()


async def remove_file_if_unreferenced(db: async_sessionmaker[AsyncSession], root: Path, relative: str | None) -> bool:
    """Files are shared by content: delete one only when no document and no pending job still names it."""
    if not relative:
        return False
    async with db() as session:
        used = await session.scalar(select(func.count()).select_from(Document).where(Document.storage_path == relative))
        pending = (
            await session.execute(
                select(IngestionJob.payload).where(IngestionJob.status.in_(("queued", "running", "failed")))
            )
        ).scalars().all()
    if used:
        return False
    if any((p or {}).get("replacement", {}).get("storage_path") == relative for p in pending):
        return False
    return stored_files.remove(root, relative)


async def _fail(ctx: IndexingContext, work: _Work | None, job_id: str, reason: str, *, retryable: bool) -> None:
    now = ctx.clock.now()
    async with transaction(ctx.db) as session:
        job = await session.get(IngestionJob, job_id)
        if job is None:
            return
        job.status = "failed"
        job.stage = "failed"
        job.error = reason
        job.finished_at = now
        document = await session.get(Document, job.document_id) if job.document_id else None
        if document is not None:
            searchable = document.version > 0
            document.status = "failed"
            document.error = (
                f"{reason} The previous version is still searchable." if searchable and work and work.replacement else reason
            )
            document.updated_at = now
    if work is not None:
        # Nothing of a failed attempt stays searchable-in-waiting.
        with contextlib.suppress(Exception):
            await ctx.store.delete_document_version(work.document_id, work.target_version)
        if work.replacement and not retryable:
            await remove_file_if_unreferenced(ctx.db, ctx.files_root, work.replacement["storage_path"])


async def run_index_job(ctx: IndexingContext, job_id: str) -> str:
    """Claim and run one job. Returns the job's outcome: done, failed, skipped (not claimable) or gone."""
    if not await job_store.claim_job(ctx.db, job_id, ctx.worker_id, ctx.clock.now()):
        return "skipped"
    work: _Work | None = None
    heartbeat = asyncio.create_task(_heartbeat(ctx, job_id))
    try:
        work = await _prepare(ctx, job_id)
        if not work.already_current:
            chunks, title, mime_type = await _index(ctx, work)
            if work.target_version > 1:
                # A searcher that searched just before the new points existed and reads the version just after
                # the flip would find neither version: let such in-flight searches finish first.
                await asyncio.sleep(ctx.old_version_grace_s)
            await _flip(ctx, work, chunks, title, mime_type)
        await _drop_old_version(ctx, work)
        await _finish(ctx, job_id)
    except _Gone:
        if work is not None:
            await ctx.store.delete_document(work.document_id)
        log.info("index_job_target_gone", job_id=job_id)
        return "gone"
    except DocumentRejected as exc:
        await _fail(ctx, work, job_id, f"The file could not be used: {exc.reason}.", retryable=False)
        return "failed"
    except asyncio.CancelledError:
        raise  # the process is stopping: the stale heartbeat lets recovery resume the job
    except Exception as exc:  # noqa: BLE001 - any other failure is recorded and retryable
        log.error("index_job_failed", job_id=job_id, error=type(exc).__name__)
        await _fail(ctx, work, job_id, f"Indexing failed unexpectedly ({type(exc).__name__}); you can retry it.", retryable=True)
        return "failed"
    finally:
        heartbeat.cancel()
        with contextlib.suppress(BaseException):
            await heartbeat
    return "done"


async def _heartbeat(ctx: IndexingContext, job_id: str) -> None:
    while True:
        await asyncio.sleep(_HEARTBEAT_EVERY_S)
        with contextlib.suppress(Exception):
            await job_store.beat(ctx.db, job_id, ctx.worker_id, ctx.clock.now())


async def _index(ctx: IndexingContext, work: _Work) -> tuple[list[Chunk], str, str]:
    last_write = 0.0
    last_stage = ""

    async def progress(stage: str, fraction: float) -> None:
        nonlocal last_write, last_stage
        status = _DOCUMENT_STATUS.get(stage)
        if status is None:
            return
        moment = time.monotonic()
        if stage == last_stage and moment - last_write < _PROGRESS_EVERY_S:
            return
        last_write, last_stage = moment, stage
        await job_store.record_progress(
            ctx.db,
            job_id=work.job_id,
            document_id=work.document_id,
            worker_id=ctx.worker_id,
            stage=stage,
            document_status=status,
            progress=fraction,
            now=ctx.clock.now(),
        )

    await progress("parsing", 0.02)
    try:
        data = await asyncio.to_thread(stored_files.read_bytes, ctx.files_root, work.storage_path)
    except FileNotFoundError:
        raise DocumentRejected(work.filename, "the stored file is missing") from None
    limits = ParseLimits(max_file_bytes=ctx.max_upload_bytes)
    parsed = await asyncio.to_thread(parse_document, data, work.filename, limits)
    await progress("chunking", 0.1)
    embedder = await ctx.embedder()
    chunks = await asyncio.to_thread(
        chunk_document,
        parsed,
        work.document_id,
        work.collection_id,
        work.target_version,
        embedder.count_tokens,
        embedder.max_chunk_tokens,
    )
    if not chunks:
        raise DocumentRejected(work.filename, "no readable text was found in the file")
    await store_chunks(chunks, embedder, ctx.store, ctx.sparse_encoder, progress, (0.15, 0.98))
    return chunks, parsed.title, parsed.mime_type


async def _drop_old_version(ctx: IndexingContext, work: _Work) -> None:
    if work.target_version > 1 and not work.already_current:
        await asyncio.sleep(ctx.old_version_grace_s)
    async with ctx.db() as session:
        current = await session.scalar(select(Document.version).where(Document.id == work.document_id))
    if current is None:
        await ctx.store.delete_document(work.document_id)
        return
    # Every version but the current one: also sweeps what an interrupted earlier attempt left behind.
    await ctx.store.delete_document(work.document_id, keep_version=int(current))
    if work.previous_storage_path and work.previous_storage_path != (work.replacement or {}).get("storage_path"):
        await remove_file_if_unreferenced(ctx.db, ctx.files_root, work.previous_storage_path)

