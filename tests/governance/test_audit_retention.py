"""Audit retention: records older than the audit period go, the chain's anchor moves, and the rest verifies."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext, append_audit, prune_audit, verify_chain
from portal.db.engine import transaction
from portal.db.models import AuditChainHead, AuditEvent
from tests.governance.conftest import T0

CTX = AuditContext(user_id="u1", roles=("teacher",))


async def _records(factory: async_sessionmaker[AsyncSession], days: list[int]) -> None:
    for day in days:
        async with transaction(factory) as session:
            await append_audit(session, at=T0 + timedelta(days=day), action="question", context=CTX)


async def test_pruning_moves_the_anchor_and_the_chain_still_verifies(factory: async_sessionmaker[AsyncSession]) -> None:
    await _records(factory, [0, 1, 2, 10, 11])
    async with transaction(factory) as session:
        result = await prune_audit(session, before=T0 + timedelta(days=5), now=T0 + timedelta(days=12))
    assert result.removed == 3 and result.anchor_seq == 3
    async with factory() as session:
        remaining = (await session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq))).scalars().all()
        head = (await session.execute(select(AuditChainHead))).scalar_one()
        report = await verify_chain(session)
    assert remaining == [4, 5, 6]  # 6 is the `audit.pruned` record itself
    assert head.anchor_seq == 3 and report.ok and report.checked == 3
    # Deleting the first record after the anchor is still caught.
    async with transaction(factory) as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 4).values(action="edited"))
    async with factory() as session:
        assert not (await verify_chain(session)).ok


async def test_a_broken_chain_is_never_pruned(factory: async_sessionmaker[AsyncSession]) -> None:
    await _records(factory, [0, 1, 2])
    async with transaction(factory) as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 1).values(outcome="denied"))
    async with transaction(factory) as session:
        result = await prune_audit(session, before=T0 + timedelta(days=30), now=T0 + timedelta(days=30))
    assert result.removed == 0 and any("record 1" in p for p in result.refused)
    async with factory() as session:
        assert len((await session.execute(select(AuditEvent.seq))).all()) == 3


async def test_with_nothing_old_enough_the_chain_is_not_walked(factory: async_sessionmaker[AsyncSession]) -> None:
    """The hourly purge asks; when the oldest record is younger than the audit period nothing is removed and the
    chain is not walked (a tampered record is then neither hidden nor reported here: `enclave audit verify` finds it)."""
    await _records(factory, [20, 21, 22])
    async with transaction(factory) as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(outcome="denied"))
    async with transaction(factory) as session:
        result = await prune_audit(session, before=T0 + timedelta(days=20), now=T0 + timedelta(days=30))
    assert result.removed == 0 and result.refused == [] and result.anchor_seq == 0
    async with factory() as session:
        assert len((await session.execute(select(AuditEvent.seq))).all()) == 3
        report = await verify_chain(session)
    assert not report.ok and any("record 2" in p for p in report.problems)
    # Once a record is old enough, the same broken chain is refused, as before.
    async with transaction(factory) as session:
        result = await prune_audit(session, before=T0 + timedelta(days=21), now=T0 + timedelta(days=30))
    assert result.removed == 0 and any("record 2" in p for p in result.refused)
