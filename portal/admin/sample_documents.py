"""Queue the bundled sample documents (portal/sample_docs/<collection folder>/) for indexing in the sample collections.

Called by the sample-data seeding of `enclave run`: the portal's workers index them once it starts, so a
newcomer can ask the sample questions at once. Idempotent: a file whose content is already in its collection
is skipped.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.admin.upload_checks import check_upload
from portal.db.models import Collection, Document, KeyValue
from portal.jobs import job_store, stored_files
from portal.settings import Settings

SAMPLE_DOCS_DIR = Path(__file__).resolve().parents[1] / "sample_docs"
# Folder under sample_docs -> the sample collection it belongs to (portal/seed.py creates them).
SAMPLE_FOLDERS = {
    "clinical-policies": "Clinical policies",
    "curriculum": "Curriculum",
    "staff-handbook": "Staff handbook",
}


def sample_files() -> list[tuple[str, Path]]:
    """(collection name, file) for every bundled sample document."""
    found: list[tuple[str, Path]] = []
    for folder, collection in SAMPLE_FOLDERS.items():
        for path in sorted((SAMPLE_DOCS_DIR / folder).glob("*")):
            if path.is_file() and not path.name.startswith("."):
                found.append((collection, path))
    return found


async def queue_sample_documents(session: AsyncSession, files_root: Path, now: datetime, max_bytes: int) -> list[str]:
    """Store each sample file and queue an index job in the caller's transaction; returns the new job ids."""
    job_ids: list[str] = []
    collections = {c.name: c for c in (await session.execute(select(Collection))).scalars()}
    for collection_name, path in sample_files():
        collection = collections.get(collection_name)
        if collection is None:  # an admin renamed or deleted it: leave their choice alone
            continue
        data = path.read_bytes()
        mime = check_upload(path.name, data, max_bytes)
        digest = stored_files.content_hash(data)
        exists = await session.scalar(
            select(Document.id).where(Document.collection_id == collection.id, Document.content_hash == digest).limit(1)
        )
        if exists:
            continue
        _, relative = stored_files.store_bytes(files_root, data)
        document = Document(
            collection_id=collection.id, title=PurePosixPath(path.name).stem, filename=path.name, mime_type=mime,
            size_bytes=len(data), content_hash=digest, storage_path=relative, status="queued",
            created_at=now, updated_at=now,
        )
        session.add(document)
        await session.flush()
        job_ids.append((await job_store.enqueue_index_job(session, document=document, now=now)).id)
    return job_ids


SEEDED_MARKER = "seed:sample_documents"


async def queue_sample_documents_once(session: AsyncSession, settings: Settings) -> list[str]:
    """Queue the samples on the first seeding only: documents an admin deleted later do not come back."""
    if await session.get(KeyValue, SEEDED_MARKER) is not None:
        return []
    now = settings.clock.now()
    job_ids = await queue_sample_documents(session, settings.files_path, now, settings.max_upload_mb * 1024 * 1024)
    session.add(KeyValue(key=SEEDED_MARKER, value=now.isoformat().encode(), expires_at=None))
    return job_ids
