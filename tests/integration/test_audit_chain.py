"""The audit chain: appends link up, and any modified, deleted, inserted or reordered record is named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from portal.audit import AuditContext, append_audit, verify_chain
from portal.db.engine import make_engine, make_session_factory, transaction
from portal.db.models import AuditEvent

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def _chain_of(database_url: str, n: int):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    ctx = AuditContext(user_id="u1", roles=("nurse",), session_hash="s" * 64, client_addr="127.0.0.1", request_id="r1")
    for i in range(n):
        async with transaction(factory) as session:
            await append_audit(session, at=T0 + timedelta(seconds=i), action="question", context=ctx, object_ids=[f"c{i}"])
    return engine, factory


async def test_untouched_chain_verifies(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 5)
    async with factory() as session:
        report = await verify_chain(session)
    assert report.ok and report.checked == 5
    await engine.dispose()


async def test_rolled_back_action_leaves_no_record(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 2)
    try:
        async with transaction(factory) as session:
            await append_audit(session, at=T0, action="doomed")
            raise RuntimeError("the action failed")
    except RuntimeError:
        pass
    async with factory() as session:
        actions = (await session.execute(select(AuditEvent.action))).scalars().all()
        assert "doomed" not in actions
        assert (await verify_chain(session)).ok
    await engine.dispose()


async def test_modified_record_is_named(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 5)
    async with transaction(factory) as session:
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(outcome="denied"))
    async with factory() as session:
        report = await verify_chain(session)
    assert not report.ok
    assert any("record 3: content was modified" in p for p in report.problems)
    await engine.dispose()


async def test_deleted_record_is_named(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 5)
    async with transaction(factory) as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.seq == 2))
    async with factory() as session:
        report = await verify_chain(session)
    assert any("records 2..2 are missing" in p for p in report.problems)
    await engine.dispose()


async def test_deleted_last_record_is_caught_by_the_head(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 4)
    async with transaction(factory) as session:
        await session.execute(delete(AuditEvent).where(AuditEvent.seq == 4))
    async with factory() as session:
        report = await verify_chain(session)
    assert any("chain head says the last record is 4" in p for p in report.problems)
    await engine.dispose()


async def test_reordered_records_are_named(database_url: str) -> None:
    engine, factory = await _chain_of(database_url, 5)
    async with transaction(factory) as session:
        # Swap the contents of records 2 and 3 (keeping their seq): a reorder.
        rows = {e.seq: e for e in (await session.execute(select(AuditEvent))).scalars()}
        a, b = rows[2], rows[3]
        fields = ("at", "object_ids", "prev_hash", "hash")
        va = {f: getattr(a, f) for f in fields}
        vb = {f: getattr(b, f) for f in fields}
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(hash="x" * 64))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 3).values(**va))
        await session.execute(update(AuditEvent).where(AuditEvent.seq == 2).values(**vb))
    async with factory() as session:
        report = await verify_chain(session)
    assert not report.ok
    assert any("record 2" in p for p in report.problems) and any("record 3" in p for p in report.problems)
    await engine.dispose()
