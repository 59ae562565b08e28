"""The retention rule: shortest period among a person's roles, unless an overriding policy applies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.db.engine import transaction
from portal.db.models import AuditEvent
from portal.governance.retention import (
    PolicyError,
    conversation_retention_days,
    delete_policy,
    retention_decision,
    save_policy,
)
from tests.governance.conftest import ADMIN_CTX, T0, add_policy


async def test_several_roles_get_the_shortest_period(factory: async_sessionmaker[AsyncSession]) -> None:
    await add_policy(factory, "nurse", 7)
    await add_policy(factory, "teacher", 90)
    async with factory() as session:
        assert await conversation_retention_days(session, ["teacher", "nurse"]) == 7
        assert await conversation_retention_days(session, ["teacher"]) == 90


async def test_roles_without_a_policy_count_as_the_default(factory: async_sessionmaker[AsyncSession]) -> None:
    await add_policy(factory, "teacher", 120)
    async with factory() as session:
        assert await conversation_retention_days(session, []) == 90
        assert await conversation_retention_days(session, ["librarian"], default_days=45) == 45
        # the unpoliced role's default (45) is shorter than teacher's 120
        assert await conversation_retention_days(session, ["teacher", "librarian"], default_days=45) == 45
        decision = await retention_decision(session, ["librarian"], default_days=45)
        assert decision.policy == "default"


async def test_an_overriding_policy_beats_shorter_ones(factory: async_sessionmaker[AsyncSession]) -> None:
    await add_policy(factory, "nurse", 7)
    await add_policy(factory, "records", 365, overrides_shorter=True)
    await add_policy(factory, "legal", 730, overrides_shorter=True)
    async with factory() as session:
        assert await conversation_retention_days(session, ["nurse", "records"]) == 365
        decision = await retention_decision(session, ["nurse", "records", "legal"])
        assert (decision.days, decision.policy) == (730, "role:legal")


async def test_zero_retention_wins_as_the_shortest(factory: async_sessionmaker[AsyncSession]) -> None:
    await add_policy(factory, "student", 0)
    await add_policy(factory, "staff", 90)
    async with factory() as session:
        decision = await retention_decision(session, ["staff", "student"])
    assert decision.zero_retention and decision.policy == "role:student"


async def test_policy_edits_are_audited_and_validated(factory: async_sessionmaker[AsyncSession]) -> None:
    async with transaction(factory) as session:
        await save_policy(
            session, role="nurse", conversation_days=7, overrides_shorter=False, allow_general_answers=False,
            now=T0, context=ADMIN_CTX,
        )
    async with transaction(factory) as session:
        await save_policy(
            session, role="nurse", conversation_days=14, overrides_shorter=False, allow_general_answers=True,
            now=T0, context=ADMIN_CTX,
        )
    async with transaction(factory) as session:
        await delete_policy(session, role="nurse", now=T0, context=ADMIN_CTX)
    async with factory() as session:
        events = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
        assert await conversation_retention_days(session, ["nurse"]) == 90
    assert [e.action for e in events] == ["retention.policy_saved", "retention.policy_saved", "retention.policy_deleted"]
    assert events[1].detail["before"]["conversation_days"] == 7
    assert events[1].detail["after"]["conversation_days"] == 14
    assert all(e.user_id == "admin0" for e in events)
    async with transaction(factory) as session:
        try:
            await save_policy(
                session, role="x", conversation_days=-1, overrides_shorter=False, allow_general_answers=False,
                now=T0, context=ADMIN_CTX,
            )
        except PolicyError as exc:
            assert "between 0" in str(exc)
        else:
            raise AssertionError("a negative period was accepted")
