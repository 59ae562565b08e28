"""In-process indexing workers (the embedded default) and how new jobs reach whoever runs them.

Workers are asyncio tasks in the portal process: each claims a queued job from the database and runs it; the
heavy parts run in threads, so the event loop keeps serving pages. A new job wakes them at once; a poll picks up
jobs queued by other processes (`enclave ingest`, another portal replica).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from portal.jobs import job_store
from portal.jobs.indexing import IndexingContext, run_index_job
from portal.logging import get_logger

if TYPE_CHECKING:
    from portal.runtime import Runtime

log = get_logger(__name__)

_POLL_S = 1.0
_RECOVER_EVERY_S = 30.0


def new_worker_id(prefix: str) -> str:
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def indexing_context(runtime: Runtime, worker_id: str, **overrides: Any) -> IndexingContext:
    if runtime.store is None:
        raise RuntimeError("the vector store is not open")
    settings = runtime.settings
    return IndexingContext(
        db=runtime.db,
        store=runtime.store,
        embedder=runtime.wait_for_embedder,
        clock=runtime.clock,
        files_root=settings.files_path,
        max_upload_bytes=settings.max_upload_mb * 1024 * 1024,
        worker_id=worker_id,
        **overrides,
    )


@dataclass
class InProcessWorkers:
    runtime: Runtime
    count: int
    stale_after: timedelta = job_store.STALE_AFTER
    context_overrides: dict[str, Any] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for index in range(self.count):
            self._tasks.append(asyncio.create_task(self._loop(index), name=f"indexing-worker-{index}"))

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()

    async def recover(self) -> job_store.RecoveryReport:
        report = await job_store.recover_stale_jobs(
            self.runtime.db, self.runtime.clock.now(), stale_after=self.stale_after
        )
        if report.requeued or report.failed:
            log.info("index_jobs_recovered", requeued=len(report.requeued), failed=len(report.failed))
        return report

    async def _loop(self, index: int) -> None:
        ctx = indexing_context(self.runtime, new_worker_id(f"portal-{index}"), **self.context_overrides)
        loop = asyncio.get_running_loop()
        next_recovery = 0.0
        while True:
            try:
                if index == 0 and loop.time() >= next_recovery:
                    await self.recover()
                    next_recovery = loop.time() + _RECOVER_EVERY_S
                ran = False
                for job_id in await job_store.queued_job_ids(self.runtime.db, limit=self.count + 1):
                    if await run_index_job(ctx, job_id) != "skipped":
                        ran = True
                        break
                if ran:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not kill the worker
                log.error("indexing_worker_error", error=type(exc).__name__)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_POLL_S)


async def start_job_workers(runtime: Runtime) -> InProcessWorkers | None:
    """Called from Runtime.start: in-process workers when settings.workers > 0 and the vector store opened."""
    # A store that failed to open (another process holds the embedded one) is left set but unusable.
    if runtime.settings.workers <= 0 or runtime.store is None or runtime.store_error is not None:
        return None
    workers = InProcessWorkers(runtime, runtime.settings.workers)
    workers.start()
    return workers


async def dispatch_jobs(runtime: Runtime, job_ids: list[str]) -> None:
    """Tell whoever runs jobs that new ones are queued (after the transaction that queued them committed)."""
    if not job_ids:
        return
    workers = getattr(runtime, "jobs", None)
    if isinstance(workers, InProcessWorkers):
        workers.wake()
        return
    if runtime.settings.redis_url:
        from portal.jobs.saq_worker import enqueue_in_saq

        try:
            await enqueue_in_saq(runtime.settings.redis_url, job_ids)
        except Exception as exc:  # noqa: BLE001 - the jobs are queued in the database; workers sweep them up
            log.error("saq_enqueue_failed", error=type(exc).__name__)
