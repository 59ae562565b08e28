"""Documents in a collection: upload, replace, re-index and delete. Indexing itself runs in the background jobs.

Every action checks first that the actor manages the collection, changes the database in one transaction with
its audit record, and only then tells the workers (so a worker never sees a half-written upload).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePosixPath

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.admin.actor import Actor, require_manager
from portal.admin.errors import AdminError, BadInput, Conflict, NotFound
from portal.admin.upload_checks import check_upload, display_name
from portal.audit import append_audit
from portal.db.engine import transaction
from portal.db.models import Collection, Document, DocumentChunk, IngestionJob, User
from portal.jobs import job_store, stored_files
from portal.jobs.indexing import remove_file_if_unreferenced
from portal.jobs.workers import dispatch_jobs
from portal.runtime import Runtime
from rag.store import VectorStore


@dataclass(frozen=True)
class IncomingFile:
    filename: str | None  # as the client sent it: only ever displayed, never used as a path
    data: bytes


@dataclass
class UploadResult:
    created: list[str] = field(default_factory=list)  # document ids
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # display names skipped: same content already there
    job_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeleteReport:
    documents: int
    chunks: int
    vectors: int
    files: int
    vectors_left: int


async def _audit_refusal(runtime: Runtime, actor: Actor, action: str, object_ids: list[str], reason: str) -> None:
    async with transaction(runtime.db) as session:
        await append_audit(
            session, at=runtime.clock.now(), action=action, context=actor.audit, object_type="document",
            object_ids=object_ids, outcome="denied", detail={"reason": reason[:300]},
        )


async def _checked(runtime: Runtime, actor: Actor, action: str, collection_id: str, files: list[IncomingFile]) -> list[str]:
    """Run the door checks on every file; the first bad one refuses the whole batch (nothing half-created)."""
    max_bytes = runtime.settings.max_upload_mb * 1024 * 1024
    mimes: list[str] = []
    for incoming in files:
        try:
            mimes.append(await asyncio.to_thread(check_upload, incoming.filename, incoming.data, max_bytes))
        except AdminError as exc:
            await _audit_refusal(runtime, actor, action, [collection_id], exc.message)
            raise
    return mimes


async def _uploader_id(session: AsyncSession, actor: Actor | None) -> str | None:
    if actor is None:
        return None
    return actor.principal.user_id if await session.get(User, actor.principal.user_id) else None


async def upload_documents(
    runtime: Runtime,
    actor: Actor,
    collection_id: str,
    files: list[IncomingFile],
    *,
    replace_same_name: bool = False,
    names: list[str] | None = None,
) -> UploadResult:
    """Store and queue files; a file whose content is already in the collection is skipped as unchanged.

    `replace_same_name` (bulk loading) turns a changed file with a known name into a new version of that
    document; `names` overrides the display names (the relative paths `enclave ingest` found).
    """
    await require_manager(runtime, actor, collection_id, "document.upload", "collection", [collection_id])
    if not files:
        raise BadInput("Choose at least one file to upload.")
    async with runtime.db() as session:
        collection = await session.get(Collection, collection_id)
    if collection is None:
        raise NotFound("That collection does not exist.")
    mimes = await _checked(runtime, actor, "document.upload", collection_id, files)
    shown = names or [display_name(f.filename) for f in files]
    written: list[tuple[str, str]] = []
    new_paths: list[str] = []
    for incoming in files:
        existed = stored_files.resolve(
            runtime.settings.files_path, stored_files.relative_path_for(stored_files.content_hash(incoming.data))
        ).exists()
        digest, relative = await asyncio.to_thread(stored_files.store_bytes, runtime.settings.files_path, incoming.data)
        written.append((digest, relative))
        if not existed:
            new_paths.append(relative)
    result = UploadResult()
    now = runtime.clock.now()
    try:
        async with transaction(runtime.db) as session:
            documents = (await session.execute(select(Document).where(Document.collection_id == collection_id))).scalars().all()
            by_hash = {d.content_hash: d for d in documents}
            by_name = {d.filename: d for d in documents}
            uploader = await _uploader_id(session, actor)
            ttl = collection.document_ttl_days
            for incoming, name, mime, (digest, relative) in zip(files, shown, mimes, written, strict=True):
                if digest in by_hash:
                    result.unchanged.append(name)
                    continue
                existing = by_name.get(name) if replace_same_name else None
                if existing is not None:
                    if await job_store.active_job_for_document(session, existing.id):
                        result.unchanged.append(name)  # already being indexed; the next run picks the change up
                        continue
                    job = await job_store.enqueue_index_job(
                        session, document=existing, now=now, kind="replace",
                        payload={"replacement": {"filename": name, "storage_path": relative, "content_hash": digest,
                                                 "size_bytes": len(incoming.data), "mime_type": mime}},
                    )
                    result.replaced.append(existing.id)
                    result.job_ids.append(job.id)
                    by_hash[digest] = existing
                    continue
                document = Document(
                    collection_id=collection_id,
                    title=PurePosixPath(name).stem[:500],
                    filename=name,
                    mime_type=mime,
                    size_bytes=len(incoming.data),
                    content_hash=digest,
                    storage_path=relative,
                    status="queued",
                    uploaded_by=uploader,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(days=ttl) if ttl else None,
                )
                session.add(document)
                await session.flush()
                job = await job_store.enqueue_index_job(session, document=document, now=now)
                by_hash[digest] = document
                result.created.append(document.id)
                result.job_ids.append(job.id)
            await append_audit(
                session, at=now, action="document.upload", context=actor.audit, object_type="document",
                object_ids=result.created + result.replaced,
                detail={"collection_id": collection_id, "created": len(result.created),
                        "replaced": len(result.replaced), "unchanged": len(result.unchanged)},
            )
    except BaseException:
        for relative in new_paths:
            await remove_file_if_unreferenced(runtime.db, runtime.settings.files_path, relative)
        raise
    await dispatch_jobs(runtime, result.job_ids)
    return result


async def _document(runtime: Runtime, document_id: str) -> Document:
    async with runtime.db() as session:
        document = await session.get(Document, document_id)
    if document is None:
        raise NotFound("That document does not exist (it may have been deleted).")
    return document


async def replace_document(runtime: Runtime, actor: Actor, document_id: str, incoming: IncomingFile) -> str | None:
    """Queue a new version; the old one stays searchable until the new one is indexed. None: same content."""
    document = await _document(runtime, document_id)
    await require_manager(runtime, actor, document.collection_id, "document.replace", "document", [document_id])
    (mime,) = await _checked(runtime, actor, "document.replace", document.collection_id, [incoming])
    digest = stored_files.content_hash(incoming.data)
    if digest == document.content_hash and document.status == "indexed":
        return None
    _, relative = await asyncio.to_thread(stored_files.store_bytes, runtime.settings.files_path, incoming.data)
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        current = await session.get(Document, document_id)
        if current is None:
            raise NotFound("That document does not exist (it may have been deleted).")
        if await job_store.active_job_for_document(session, document_id):
            raise Conflict("This document is being processed right now; wait for it to finish, then replace it.")
        job = await job_store.enqueue_index_job(
            session, document=current, now=now, kind="replace",
            payload={"replacement": {"filename": display_name(incoming.filename), "storage_path": relative,
                                     "content_hash": digest, "size_bytes": len(incoming.data), "mime_type": mime}},
        )
        await append_audit(
            session, at=now, action="document.replace", context=actor.audit, object_type="document",
            object_ids=[document_id], detail={"collection_id": current.collection_id, "job_id": job.id},
        )
    await dispatch_jobs(runtime, [job.id])
    return job.id


async def reindex_document(runtime: Runtime, actor: Actor, document_id: str) -> str:
    document = await _document(runtime, document_id)
    await require_manager(runtime, actor, document.collection_id, "document.reindex", "document", [document_id])
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        current = await session.get(Document, document_id)
        if current is None:
            raise NotFound("That document does not exist (it may have been deleted).")
        job = await job_store.enqueue_index_job(session, document=current, now=now, kind="reindex")
        await append_audit(
            session, at=now, action="document.reindex", context=actor.audit, object_type="document",
            object_ids=[document_id], detail={"collection_id": current.collection_id, "job_id": job.id},
        )
    await dispatch_jobs(runtime, [job.id])
    return job.id


async def reindex_collection(runtime: Runtime, actor: Actor, collection_id: str) -> list[str]:
    await require_manager(runtime, actor, collection_id, "collection.reindex", "collection", [collection_id])
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        if await session.get(Collection, collection_id) is None:
            raise NotFound("That collection does not exist.")
        documents = (await session.execute(select(Document).where(Document.collection_id == collection_id))).scalars().all()
        job_ids = [
            (await job_store.enqueue_index_job(session, document=d, now=now, kind="reindex")).id for d in documents
        ]
        await append_audit(
            session, at=now, action="collection.reindex", context=actor.audit, object_type="collection",
            object_ids=[collection_id], detail={"documents": len(documents)},
        )
    await dispatch_jobs(runtime, job_ids)
    return job_ids


async def delete_document(runtime: Runtime, actor: Actor, document_id: str) -> DeleteReport:
    """Delete the rows, the stored file (unless another document shares it) and every vector, then verify."""
    document = await _document(runtime, document_id)
    await require_manager(runtime, actor, document.collection_id, "document.delete", "document", [document_id])
    store = _require_store(runtime)
    vectors = await store.count(document_id=document_id)
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        current = await session.get(Document, document_id)
        if current is None:
            raise NotFound("That document does not exist (it may have been deleted).")
        running = await session.scalar(
            select(func.count()).select_from(IngestionJob).where(
                IngestionJob.document_id == document_id, IngestionJob.status == "running"
            )
        )
        if running:
            raise Conflict("This document is being indexed right now; wait for it to finish, then delete it.")
        chunks = await session.scalar(
            select(func.count()).select_from(DocumentChunk).where(DocumentChunk.document_id == document_id)
        ) or 0
        paths = [current.storage_path] + [
            (p or {}).get("replacement", {}).get("storage_path")
            for p in (await session.execute(select(IngestionJob.payload).where(IngestionJob.document_id == document_id))).scalars()
        ]
        await session.delete(current)
        await append_audit(
            session, at=now, action="document.delete", context=actor.audit, object_type="document",
            object_ids=[document_id],
            detail={"collection_id": current.collection_id, "chunks": int(chunks), "vectors": vectors},
        )
    await store.delete_document(document_id)
    files = 0
    for relative in {p for p in paths if p}:
        files += int(await remove_file_if_unreferenced(runtime.db, runtime.settings.files_path, relative))
    left = await store.count(document_id=document_id)
    return DeleteReport(documents=1, chunks=int(chunks), vectors=vectors, files=files, vectors_left=left)


def _require_store(runtime: Runtime) -> VectorStore:
    if runtime.store is None:
        raise Conflict("The vector store is not available right now; try again shortly.")
    return runtime.store
