"""`enclave worker`: separate indexing processes fed through SAQ on Redis, for sites that outgrow one process.

SAQ only carries job ids; the ingestion_jobs row stays the source of truth for status and progress, and claiming
it is a conditional UPDATE, so a message delivered twice (or a job also seen by an in-process worker) runs once.
On start-up and every minute the worker queues again anything the database says is queued, so jobs survive a
Redis restart, and recovers jobs whose worker died.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from portal import heap
from portal.jobs import job_store
from portal.logging import get_logger

log = get_logger(__name__)

QUEUE_NAME = "enclave-indexing"
TASK_NAME = "run_ingestion_job"


def make_queue(redis_url: str) -> Any:
    from saq import Queue

    return Queue.from_url(redis_url, name=QUEUE_NAME)


async def enqueue_in_saq(redis_url: str, job_ids: list[str]) -> None:
    queue = make_queue(redis_url)
    try:
        for job_id in job_ids:
            # key=job id: SAQ keeps one message per job however often it is enqueued.
            await queue.enqueue(TASK_NAME, key=f"ingestion-{job_id}", job_id=job_id, timeout=3600)
    finally:
        await queue.disconnect()


async def run_ingestion_job(ctx: dict[str, Any], *, job_id: str) -> str:
    from portal.jobs.indexing import run_index_job

    return await run_index_job(ctx["indexing"], job_id)


async def sweep(ctx: dict[str, Any]) -> None:
    """Recover stale jobs and (re)enqueue every queued one: the database, not Redis, says what is left to do."""
    runtime = ctx["runtime"]
    await job_store.recover_stale_jobs(runtime.db, runtime.clock.now())
    job_ids = await job_store.queued_job_ids(runtime.db, limit=10_000)
    queue = ctx["queue"]
    for job_id in job_ids:
        await queue.enqueue(TASK_NAME, key=f"ingestion-{job_id}", job_id=job_id, timeout=3600)


def build_worker(runtime: Any, concurrency: int = 1, **indexing_overrides: Any) -> Any:
    """A SAQ Worker whose tasks run jobs with `runtime`'s database, store and embedder."""
    from saq import CronJob, Worker

    from portal.jobs.workers import indexing_context, new_worker_id

    if runtime.settings.redis_url is None:
        raise click.UsageError("enclave worker needs ENCLAVE_REDIS_URL (the SAQ queue lives in Redis)")
    queue = make_queue(runtime.settings.redis_url)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = runtime
        ctx["queue"] = queue
        ctx["indexing"] = indexing_context(runtime, new_worker_id("saq"), **indexing_overrides)
        await sweep(ctx)

    async def sweep_job(ctx: dict[str, Any]) -> None:
        await sweep(ctx)

    return Worker(
        queue,
        functions=[(TASK_NAME, run_ingestion_job)],
        concurrency=concurrency,
        startup=startup,
        cron_jobs=[CronJob(sweep_job, cron="* * * * *")],
    )


async def _serve(concurrency: int) -> None:
    from portal.cli import _settings
    from portal.runtime import Runtime

    # workers=0: this process runs SAQ's tasks, not the in-process loop.
    settings = _settings(workers=0)
    if settings.redis_url is None:
        raise click.UsageError("enclave worker needs ENCLAVE_REDIS_URL (the SAQ queue lives in Redis)")
    if settings.qdrant_url is None:
        raise click.UsageError(
            "separate worker processes need a shared Qdrant server (ENCLAVE_QDRANT_URL); with the embedded "
            "vector store, indexing runs inside the portal process (ENCLAVE_WORKERS)"
        )
    runtime = Runtime.create(settings, answers_questions=False)
    heap.enable()  # a long-running worker: see portal.heap
    await runtime.start()
    if runtime.store is None:
        raise click.ClickException(f"the vector store could not be opened ({runtime.store_error})")
    worker = build_worker(runtime, concurrency)
    click.echo(f"enclave worker: {concurrency} concurrent job(s) from the SAQ queue {QUEUE_NAME!r}")
    try:
        await worker.start()
    finally:
        await worker.queue.disconnect()
        await runtime.stop()


@click.command("worker")
@click.option("--concurrency", default=1, show_default=True, help="Jobs this process runs at once.")
def worker_command(concurrency: int) -> None:
    """Run indexing jobs from the SAQ queue on Redis (separate worker processes for larger sites)."""
    asyncio.run(_serve(concurrency))
