"""The ingestion_jobs table as a work queue: enqueue, claim, heartbeat, finish, and recover interrupted jobs.

The database row is the source of truth for a job's status and progress, whoever runs it (an in-process worker
or an `enclave worker` process fed by SAQ): claiming is a conditional UPDATE, so a job handed to two workers
runs once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.db.engine import transaction
from portal.db.models import Document, IngestionJob

ACTIVE_STATUSES = ("queued", "running")
# A running job whose heartbeat is older than this was interrupted (crash, kill -9, lost host).
STALE_AFTER = timedelta(seconds=90)
MAX_ATTEMPTS = 3


async def active_job_for_document(session: AsyncSession, document_id: str) -> IngestionJob | None:
    row = await session.execute(
        select(IngestionJob)
        .where(IngestionJob.document_id == document_id, IngestionJob.status.in_(ACTIVE_STATUSES))
        .limit(1)
    )
    return row.scalar_one_or_none()


async def enqueue_index_job(
    session: AsyncSession,
    *,
    document: Document,
    now: datetime,
    kind: str = "index",
    payload: dict[str, Any] | None = None,
) -> IngestionJob:
    """Queue (re)indexing of a document inside the caller's transaction.

    A plain re-index of a document that already has a queued or running job returns that job instead of
    adding a second one; a replacement (payload with a new file) always gets its own job.
    """
    if payload is None:
        existing = await active_job_for_document(session, document.id)
        if existing is not None:
            return existing
    job = IngestionJob(
        kind=kind,
        collection_id=document.collection_id,
        document_id=document.id,
        status="queued",
        stage="queued",
        progress=0.0,
        payload=dict(payload or {}),
        created_at=now,
    )
    session.add(job)
    document.status = "queued"
    document.progress = 0.0
    document.updated_at = now
    await session.flush()
    return job


async def queued_job_ids(db: async_sessionmaker[AsyncSession], limit: int = 20) -> list[str]:
    async with db() as session:
        rows = await session.execute(
            select(IngestionJob.id)
            .where(IngestionJob.status == "queued")
            .order_by(IngestionJob.created_at, IngestionJob.id)
            .limit(limit)
        )
        return list(rows.scalars())


async def claim_job(db: async_sessionmaker[AsyncSession], job_id: str, worker_id: str, now: datetime) -> bool:
    """queued -> running for exactly one worker; False when someone else took it (or it is gone or finished)."""
    async with transaction(db) as session:
        result = await session.execute(
            update(IngestionJob)
            .where(IngestionJob.id == job_id, IngestionJob.status == "queued")
            .values(
                status="running",
                worker_id=worker_id,
                attempts=IngestionJob.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                error=None,
            )
        )
        return bool(getattr(result, "rowcount", 0) == 1)


async def record_progress(
    db: async_sessionmaker[AsyncSession],
    *,
    job_id: str,
    document_id: str,
    worker_id: str,
    stage: str,
    document_status: str,
    progress: float,
    now: datetime,
) -> None:
    """One short transaction: any portal process reading the rows shows the same live progress."""
    async with transaction(db) as session:
        await session.execute(
            update(IngestionJob)
            .where(IngestionJob.id == job_id, IngestionJob.worker_id == worker_id, IngestionJob.status == "running")
            .values(stage=stage, progress=progress, heartbeat_at=now)
        )
        await session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(status=document_status, progress=progress, updated_at=now)
        )


async def beat(db: async_sessionmaker[AsyncSession], job_id: str, worker_id: str, now: datetime) -> None:
    async with transaction(db) as session:
        await session.execute(
            update(IngestionJob)
            .where(IngestionJob.id == job_id, IngestionJob.worker_id == worker_id, IngestionJob.status == "running")
            .values(heartbeat_at=now)
        )


@dataclass(frozen=True)
class RecoveryReport:
    requeued: tuple[str, ...]
    failed: tuple[str, ...]


async def recover_stale_jobs(
    db: async_sessionmaker[AsyncSession],
    now: datetime,
    *,
    stale_after: timedelta = STALE_AFTER,
    max_attempts: int = MAX_ATTEMPTS,
) -> RecoveryReport:
    """Running jobs whose worker stopped beating: queue them again, or fail them after `max_attempts` tries.

    Re-running is harmless: a job writes the same target version (kept in its payload) and point ids derive
    from chunk id and version, so a resumed job overwrites what the interrupted one wrote.
    """
    requeued: list[str] = []
    failed: list[str] = []
    async with transaction(db) as session:
        stale = (
            await session.execute(
                select(IngestionJob).where(
                    IngestionJob.status == "running", IngestionJob.heartbeat_at < now - stale_after
                )
            )
        ).scalars().all()
        for job in stale:
            if job.attempts >= max_attempts:
                job.status = "failed"
                job.finished_at = now
                job.error = f"Indexing was interrupted {job.attempts} times (the worker stopped). Retry when the cause is fixed."
                failed.append(job.id)
                if job.document_id:
                    await session.execute(
                        update(Document)
                        .where(Document.id == job.document_id)
                        .values(status="failed", error=job.error, updated_at=now)
                    )
            else:
                flipped = job.stage == "cleanup"  # the new version is current; only the old points remain to drop
                job.status = "queued"
                job.stage = "cleanup" if flipped else "queued"
                job.worker_id = None
                requeued.append(job.id)
                if job.document_id and not flipped:
                    await session.execute(
                        update(Document).where(Document.id == job.document_id).values(status="queued", updated_at=now)
                    )
    return RecoveryReport(tuple(requeued), tuple(failed))


async def retry_failed_jobs(session: AsyncSession, job_ids: Iterable[str], now: datetime) -> list[str]:
    """failed -> queued (the admin's Retry); the attempts count starts again."""
    ids = list(job_ids)
    if not ids:
        return []
    jobs = (
        await session.execute(select(IngestionJob).where(IngestionJob.id.in_(ids), IngestionJob.status == "failed"))
    ).scalars().all()
    for job in jobs:
        job.status = "queued"
        job.stage = "queued"
        job.attempts = 0
        job.error = None
        job.worker_id = None
        job.created_at = now
    return [job.id for job in jobs]
