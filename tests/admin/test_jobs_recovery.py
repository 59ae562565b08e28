"""Jobs survive crashes: an interrupted job is resumed without duplicates, or failed and retryable; SAQ path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from portal.admin import documents
from portal.admin.documents import IncomingFile
from portal.clock import MovableClock
from portal.db.models import Document, IngestionJob
from portal.jobs import job_store
from portal.jobs.indexing import run_index_job
from portal.jobs.workers import indexing_context
from portal.runtime import Runtime
from tests.admin.helpers import make_collection, make_person, wait_for_job, wait_for_status
from tests.conftest import REDIS_SKIP_REASON, REDIS_URL

# Long enough that embedding takes a moment, so the test can interrupt it mid-way.
LONG_POLICY = "\n\n".join(
    f"## Section {n}\n\nMedication round {n}: check the patient's identity band, allergies and the prescription "
    f"chart before giving any dose; record the time, the dose and your initials at once (step {n})."
    for n in range(1, 120)
).encode()


@pytest.fixture
async def clocked_runtime(settings_factory: Any, database_url: str) -> AsyncIterator[Runtime]:
    settings = settings_factory(database_url=database_url, workers=0, clock=MovableClock())
    runtime = Runtime.create(settings)
    await runtime.start()
    await runtime.wait_for_embedder()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def _job(runtime: Runtime, job_id: str) -> IngestionJob:
    async with runtime.db() as session:
        job = await session.get(IngestionJob, job_id)
    assert job is not None
    return job


async def test_a_crashed_job_is_resumed_and_writes_no_duplicates(clocked_runtime: Runtime) -> None:
    runtime = clocked_runtime
    clock = runtime.clock
    assert isinstance(clock, MovableClock)
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    result = await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("meds.md", LONG_POLICY)])
    (document_id,), (job_id,) = result.created, result.job_ids

    # Worker A starts the job and "crashes" while embedding: its task dies, the row still says running.
    crashed = asyncio.create_task(run_index_job(indexing_context(runtime, "worker-a"), job_id))
    await wait_for_status(runtime, [document_id], {"embedding"}, timeout=60)
    crashed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await crashed
    interrupted = await _job(runtime, job_id)
    assert interrupted.status == "running" and interrupted.worker_id == "worker-a" and interrupted.attempts == 1

    # A fresh heartbeat is not stale: nothing is recovered yet.
    assert await job_store.recover_stale_jobs(runtime.db, clock.now()) == job_store.RecoveryReport((), ())
    clock.advance(timedelta(minutes=5))
    report = await job_store.recover_stale_jobs(runtime.db, clock.now())
    assert report.requeued == (job_id,)
    assert (await _job(runtime, job_id)).status == "queued"

    # Worker B resumes it; the version chosen by the first attempt is reused, so no duplicate points.
    outcome = await run_index_job(indexing_context(runtime, "worker-b", old_version_grace_s=0), job_id)
    assert outcome == "done"
    job = await _job(runtime, job_id)
    assert job.status == "done" and job.attempts == 2 and job.worker_id == "worker-b"
    async with runtime.db() as session:
        document = await session.get(Document, document_id)
    assert document is not None and document.status == "indexed" and document.version == 1
    assert runtime.store is not None
    assert await runtime.store.count(document_id=document_id) == document.chunk_count > 10

    # Re-running a finished job is harmless: it is not claimable.
    assert await run_index_job(indexing_context(runtime, "worker-c"), job_id) == "skipped"


async def test_a_job_interrupted_too_often_fails_and_can_be_retried(clocked_runtime: Runtime) -> None:
    runtime = clocked_runtime
    clock = runtime.clock
    assert isinstance(clock, MovableClock)
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    result = await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("meds.md", LONG_POLICY)])
    (document_id,), (job_id,) = result.created, result.job_ids
    for attempt in range(1, job_store.MAX_ATTEMPTS + 1):
        assert await job_store.claim_job(runtime.db, job_id, f"dead-{attempt}", clock.now())
        clock.advance(timedelta(minutes=5))
        report = await job_store.recover_stale_jobs(runtime.db, clock.now())
    assert report.failed == (job_id,)
    job = await _job(runtime, job_id)
    assert job.status == "failed" and "interrupted 3 times" in (job.error or "")
    failed = (await wait_for_status(runtime, [document_id], {"failed"}))[document_id]
    assert "interrupted" in (failed.error or "")

    retry_job = await documents.reindex_document(runtime, admin, document_id)
    assert retry_job != job_id
    assert await run_index_job(indexing_context(runtime, "worker-ok", old_version_grace_s=0), retry_job) == "done"
    indexed = (await wait_for_status(runtime, [document_id], {"indexed"}))[document_id]
    assert indexed.error is None


@pytest.mark.redis
async def test_saq_worker_runs_jobs_queued_through_redis(settings_factory: Any, database_url: str) -> None:
    if not REDIS_URL:
        pytest.skip(REDIS_SKIP_REASON)
    from portal.jobs.saq_worker import build_worker

    settings = settings_factory(database_url=database_url, workers=0, redis_url=REDIS_URL)
    runtime = Runtime.create(settings)
    await runtime.start()
    assert runtime.jobs is None  # no in-process workers: only SAQ runs jobs here
    await runtime.wait_for_embedder()
    worker = build_worker(runtime, concurrency=1, old_version_grace_s=0)
    worker_task = asyncio.create_task(worker.start())
    try:
        admin = await make_person(runtime, "admin@riverside.test", ["admin"])
        collection_id = await make_collection(runtime, f"Clinical {os.getpid()}", ["nurse"])
        result = await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("meds.md", LONG_POLICY[:3000])])
        found = await wait_for_status(runtime, result.created, {"indexed", "failed"}, timeout=120)
        (document,) = found.values()
        assert document.status == "indexed", document.error
        (job_id,) = result.job_ids
        job = await wait_for_job(runtime, job_id, {"done", "failed"})
        assert job.status == "done" and (job.worker_id or "").startswith("saq:")
        assert job.document_id == document.id
    finally:
        await worker.stop()
        worker_task.cancel()
        with pytest.raises(BaseException):
            await worker_task
        await worker.queue.disconnect()
        await runtime.stop()


async def test_a_job_is_claimed_by_exactly_one_worker(clocked_runtime: Runtime) -> None:
    runtime = clocked_runtime
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (job_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("meds.md", LONG_POLICY[:2000])])).job_ids
    claims = await asyncio.gather(*(job_store.claim_job(runtime.db, job_id, f"w{n}", runtime.clock.now()) for n in range(4)))
    assert sorted(claims) == [False, False, False, True]
    job = await _job(runtime, job_id)
    assert job.attempts == 1 and job.status == "running"
