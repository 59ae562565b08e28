"""Legal hold survives every deletion path: a person deleting their conversation, an admin deleting a person,
the purge; and zero retention keeps nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext
from portal.clock import MovableClock
from portal.db.engine import transaction
from portal.db.models import AuditEvent, Conversation, Message, User
from portal.governance.erasure import delete_conversation, delete_conversation_and_files, delete_user
from portal.governance.holds import HeldError, lift_hold, place_hold
from portal.governance.purge import run_purge
from portal.governance.retention import conversation_retention_days
from tests.governance.conftest import ADMIN_CTX, T0, add_conversation, add_policy, add_user


def _as(user_id: str) -> AuditContext:
    return AuditContext(user_id=user_id, roles=("nurse",), session_hash="s" * 64, client_addr="127.0.0.1")


async def _hold(factory: async_sessionmaker[AsyncSession], kind: str, subject_id: str) -> str:
    async with transaction(factory) as session:
        hold = await place_hold(session, subject_type=kind, subject_id=subject_id, reason="litigation",  # type: ignore[arg-type]
                                case_reference="CASE-7", now=T0, context=ADMIN_CTX)
        return hold.id


async def test_a_person_deletes_their_own_conversation_but_not_a_held_one(
    factory: async_sessionmaker[AsyncSession], store: Any, tmp_path: Any
) -> None:
    alice = await add_user(factory, "alice", "nurse")
    mallory = await add_user(factory, "mallory", "nurse")
    free = await add_conversation(factory, alice)
    held = await add_conversation(factory, alice)
    hold_id = await _hold(factory, "conversation", held)

    erased = await delete_conversation_and_files(factory, store, tmp_path, free, _as(alice), now=T0)
    assert erased.counts["conversations"] == 1 and erased.counts["messages"] == 1
    with pytest.raises(HeldError):
        await delete_conversation_and_files(factory, store, tmp_path, held, _as(alice), now=T0)
    with pytest.raises(LookupError):  # someone else's conversation is not theirs to delete
        async with transaction(factory) as session:
            await delete_conversation(session, held, _as(mallory), now=T0)
    async with factory() as session:
        assert await session.get(Conversation, free) is None
        assert await session.get(Conversation, held) is not None
    async with transaction(factory) as session:
        await lift_hold(session, hold_id=hold_id, now=T0 + timedelta(hours=1), context=ADMIN_CTX)
    async with transaction(factory) as session:
        result = await delete_conversation(session, held, _as(alice), now=T0 + timedelta(hours=2))
    assert not result.held
    async with factory() as session:
        actions = (await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq))).scalars().all()
    assert actions == ["hold.placed", "conversation.deleted", "hold.skip", "hold.lifted", "conversation.deleted"]


async def test_an_admin_deleting_a_person_keeps_what_is_held(factory: async_sessionmaker[AsyncSession]) -> None:
    alice = await add_user(factory, "alice", "nurse")
    bob = await add_user(factory, "bob", "nurse")
    alice_free = await add_conversation(factory, alice)
    alice_held = await add_conversation(factory, alice)
    bob_conv = await add_conversation(factory, bob)
    await _hold(factory, "conversation", alice_held)
    await _hold(factory, "user", bob)

    async with transaction(factory) as session:
        result = await delete_user(session, alice, ADMIN_CTX, now=T0)
    assert result.held_conversation_ids == [alice_held] and not result.user_removed
    async with transaction(factory) as session:
        bob_result = await delete_user(session, bob, ADMIN_CTX, now=T0)
    assert bob_result.held_conversation_ids == [bob_conv] and bob_result.erased.counts["conversations"] == 0
    async with factory() as session:
        assert await session.get(Conversation, alice_free) is None
        assert await session.get(Conversation, alice_held) is not None
        assert await session.get(Conversation, bob_conv) is not None
        user = await session.get(User, alice)
        assert user is not None and user.status == "deactivated"
        skips = (await session.execute(select(AuditEvent).where(AuditEvent.action == "hold.skip"))).scalars().all()
    assert {tuple(s.object_ids) for s in skips} == {(alice_held,), (bob_conv,)}


async def test_an_admin_deleting_a_person_with_nothing_held_removes_them(
    factory: async_sessionmaker[AsyncSession],
) -> None:
    carol = await add_user(factory, "carol", "teacher")
    conversation = await add_conversation(factory, carol)
    async with transaction(factory) as session:
        result = await delete_user(session, carol, ADMIN_CTX, now=T0)
    assert result.user_removed and result.erased.counts["conversations"] == 1
    async with factory() as session:
        assert await session.get(User, carol) is None
        assert await session.get(Conversation, conversation) is None


async def test_a_person_on_hold_keeps_everything_through_the_purge(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "nurse", 7)
    held_person = await add_user(factory, "hana", "nurse")
    other = await add_user(factory, "otto", "nurse")
    kept = [await add_conversation(factory, held_person) for _ in range(2)]
    gone = await add_conversation(factory, other)
    hold_id = await _hold(factory, "user", held_person)
    clock.advance(timedelta(days=30))
    report = await run_purge(factory, store, settings)
    assert report.conversations == 1 and report.held_skipped == set(kept)
    async with factory() as session:
        assert all([await session.get(Conversation, c) is not None for c in kept])
        assert await session.get(Conversation, gone) is None
    # Lifted: the next purge takes them.
    async with transaction(factory) as session:
        await lift_hold(session, hold_id=hold_id, now=clock.now(), context=ADMIN_CTX)
    clock.advance(timedelta(minutes=1))
    report = await run_purge(factory, store, settings)
    assert report.conversations == 2


async def test_zero_retention_keeps_nothing(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    """Chat asks conversation_retention_days and writes nothing for 0; should anything exist anyway (the policy
    changed to 0 later), the next purge removes it at once."""
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "student", 0)
    await add_policy(factory, "staff", 90)
    sam = await add_user(factory, "sam", "student", "staff")
    async with factory() as session:
        assert await conversation_retention_days(session, ["student", "staff"]) == 0
    written_before = await add_conversation(factory, sam, last_activity=T0)
    report = await run_purge(factory, store, settings)
    assert report.policies["role:student"].kinds["conversations"] == 1
    async with factory() as session:
        assert await session.get(Conversation, written_before) is None
        assert (await session.execute(select(Message.id))).first() is None
