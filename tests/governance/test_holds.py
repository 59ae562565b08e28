"""Legal hold: on a person or a conversation, active until lifted, placing and lifting audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.db.engine import transaction
from portal.db.models import AuditEvent
from portal.governance.holds import HoldError, held_subjects, is_held, lift_hold, place_hold
from tests.governance.conftest import ADMIN_CTX, T0, add_conversation, add_user


async def test_a_hold_on_a_person_holds_their_conversations(factory: async_sessionmaker[AsyncSession]) -> None:
    alice = await add_user(factory, "alice", "nurse")
    bob = await add_user(factory, "bob", "nurse")
    conv_a = await add_conversation(factory, alice)
    conv_b = await add_conversation(factory, bob)
    async with transaction(factory) as session:
        hold = await place_hold(
            session, subject_type="user", subject_id=alice, reason="litigation", case_reference="CASE-1",
            now=T0, context=ADMIN_CTX,
        )
    now = T0 + timedelta(minutes=1)
    async with factory() as session:
        assert await is_held(session, user_id=alice, now=now)
        assert await is_held(session, conversation_id=conv_a, now=now)
        assert not await is_held(session, conversation_id=conv_b, now=now)
        assert not await is_held(session, user_id=bob, now=now)
        # not yet placed at an earlier instant
        assert not await is_held(session, user_id=alice, now=T0 - timedelta(seconds=1))
    async with transaction(factory) as session:
        await lift_hold(session, hold_id=hold.id, now=now, context=ADMIN_CTX)
    async with factory() as session:
        assert not await is_held(session, conversation_id=conv_a, now=now + timedelta(seconds=1))
        actions = (await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq))).scalars().all()
    assert actions == ["hold.placed", "hold.lifted"]


async def test_a_hold_on_one_conversation_leaves_the_others(factory: async_sessionmaker[AsyncSession]) -> None:
    alice = await add_user(factory, "alice", "nurse")
    held = await add_conversation(factory, alice)
    free = await add_conversation(factory, alice)
    async with transaction(factory) as session:
        await place_hold(
            session, subject_type="conversation", subject_id=held, reason="complaint", case_reference="C-9",
            now=T0, context=ADMIN_CTX,
        )
    async with factory() as session:
        assert await is_held(session, conversation_id=held, now=T0)
        assert not await is_held(session, conversation_id=free, now=T0)
        assert not await is_held(session, user_id=alice, now=T0)
        subjects = await held_subjects(session, T0)
    assert subjects.conversation_ids == {held} and not subjects.user_ids


async def test_a_hold_needs_a_reason_a_case_and_a_real_subject(factory: async_sessionmaker[AsyncSession]) -> None:
    alice = await add_user(factory, "alice", "nurse")
    async with transaction(factory) as session:
        with pytest.raises(HoldError, match="reason"):
            await place_hold(session, subject_type="user", subject_id=alice, reason=" ", case_reference="C",
                             now=T0, context=ADMIN_CTX)
        with pytest.raises(HoldError, match="case reference"):
            await place_hold(session, subject_type="user", subject_id=alice, reason="r", case_reference="",
                             now=T0, context=ADMIN_CTX)
        with pytest.raises(HoldError, match="no person"):
            await place_hold(session, subject_type="user", subject_id="nobody", reason="r", case_reference="C",
                             now=T0, context=ADMIN_CTX)
