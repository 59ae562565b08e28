"""The purge scheduler's lease: N portal processes run the purge once per interval, not N times."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.clock import MovableClock
from portal.db.models import AuditEvent
from portal.governance.scheduler import LEASE_DURATION, PURGE_LEASE, claim_lease, run_purge_with_lease
from tests.governance.conftest import T0


async def test_three_processes_one_purge_per_interval(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock, purge_interval_minutes=60)

    async def tick() -> list[Any]:
        return await asyncio.gather(
            *(run_purge_with_lease(factory, store, settings, holder=f"portal-{i}", only_if_due=True) for i in range(3))
        )

    assert sum(r is not None for r in await tick()) == 1
    clock.advance(timedelta(minutes=30))
    assert sum(r is not None for r in await tick()) == 0  # not due yet
    clock.advance(timedelta(minutes=31))
    assert sum(r is not None for r in await tick()) == 1
    async with factory() as session:
        receipts = (await session.execute(select(AuditEvent).where(AuditEvent.action == "purge.receipt"))).all()
    assert len(receipts) == 2


async def test_a_lease_held_by_a_crashed_process_runs_out(factory: async_sessionmaker[AsyncSession]) -> None:
    every = timedelta(minutes=60)
    assert await claim_lease(factory, name=PURGE_LEASE, holder="crashed", now=T0, due_every=every)
    # It never releases: others wait until the lease runs out, then one takes over.
    assert not await claim_lease(factory, name=PURGE_LEASE, holder="other", now=T0 + timedelta(minutes=5), due_every=None)
    later = T0 + LEASE_DURATION + timedelta(seconds=1)
    assert await claim_lease(factory, name=PURGE_LEASE, holder="other", now=later, due_every=every)
    assert not await claim_lease(factory, name=PURGE_LEASE, holder="third", now=later, due_every=every)


async def test_the_in_process_loop_runs_the_purge(
    store: Any, settings_factory: Any, database_url: str, factory: async_sessionmaker[AsyncSession]
) -> None:
    from portal.governance.scheduler import purge_scheduler_loop
    from portal.runtime import Runtime

    runtime = Runtime.create(settings_factory(database_url=database_url, clock=MovableClock(T0)))
    runtime.store = store
    task = asyncio.create_task(purge_scheduler_loop(runtime, check_every_s=0.01))
    try:
        for _ in range(500):  # polls the database for the loop's receipt; no time is faked here
            async with factory() as session:
                if (await session.execute(select(AuditEvent.seq).where(AuditEvent.action == "purge.receipt"))).first():
                    break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the scheduler never ran the purge")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runtime.engine.dispose()
