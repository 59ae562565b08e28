"""Running the purge on a schedule: a lease row in the database so N portal processes run it once, not N times.

The embedded default runs `purge_scheduler_loop` inside the portal; larger sites run `enclave purge` from cron
or a Kubernetes CronJob. Both take the same lease, so they never purge at the same time.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.db.engine import transaction
from portal.db.models import SchedulerLease
from portal.governance.erasure import lock_for_update
from portal.governance.purge import PurgeReport, run_purge
from portal.logging import get_logger
from portal.settings import Settings
from rag.store import VectorStore

if TYPE_CHECKING:
    from portal.runtime import Runtime

log = get_logger(__name__)

PURGE_LEASE = "retention-purge"
# Longer than any purge should take; a holder that died releases the lease when it runs out.
LEASE_DURATION = timedelta(minutes=30)


def process_holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def claim_lease(
    factory: async_sessionmaker[AsyncSession],
    *,
    name: str,
    holder: str,
    now: datetime,
    due_every: timedelta | None,
    lease_for: timedelta = LEASE_DURATION,
) -> bool:
    """Take the lease if nobody else holds it (and, with `due_every`, if the job is due). True when taken."""
    async with transaction(factory) as session:
        lease = await session.get(SchedulerLease, name, with_for_update=lock_for_update(session))
        if lease is None:
            try:
                async with session.begin_nested():
                    session.add(SchedulerLease(name=name, holder=holder, expires_at=now + lease_for))
            except IntegrityError:
                return False  # another process created it a moment ago: it runs the job
            return True
        if lease.holder != holder and lease.expires_at > now:
            return False
        if due_every is not None and lease.last_run_at is not None and lease.last_run_at + due_every > now:
            return False
        lease.holder = holder
        lease.expires_at = now + lease_for
        return True


async def release_lease(
    factory: async_sessionmaker[AsyncSession], *, name: str, holder: str, now: datetime, ran_at: datetime | None
) -> None:
    async with transaction(factory) as session:
        lease = await session.get(SchedulerLease, name, with_for_update=lock_for_update(session))
        if lease is None or lease.holder != holder:
            return
        lease.expires_at = now
        if ran_at is not None:
            lease.last_run_at = ran_at


async def run_purge_with_lease(
    factory: async_sessionmaker[AsyncSession],
    store: VectorStore | None,
    settings: Settings,
    *,
    holder: str,
    only_if_due: bool,
) -> PurgeReport | None:
    """One purge under the lease; None when another process holds it (or, with only_if_due, it is not due)."""
    started = settings.clock.now()
    due_every = timedelta(minutes=settings.purge_interval_minutes) if only_if_due else None
    if not await claim_lease(factory, name=PURGE_LEASE, holder=holder, now=started, due_every=due_every):
        return None
    report: PurgeReport | None = None
    try:
        report = await run_purge(factory, store, settings)
        return report
    finally:
        await release_lease(
            factory, name=PURGE_LEASE, holder=holder, now=settings.clock.now(),
            ran_at=started if report is not None else None,
        )


async def purge_scheduler_loop(runtime: Runtime, *, check_every_s: float = 60.0) -> None:
    """Check once a minute whether the purge is due; the lease makes one process run it per interval."""
    holder = process_holder_name()
    while True:
        # Wait first: a portal that just started (or a test app) does not purge in its first minute.
        await asyncio.sleep(check_every_s)
        try:
            await run_purge_with_lease(runtime.db, runtime.store, runtime.settings, holder=holder, only_if_due=True)
        except Exception as exc:  # noqa: BLE001 - the next check retries; the portal keeps serving
            log.error("purge_failed", error=type(exc).__name__)
