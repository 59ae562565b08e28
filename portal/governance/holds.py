"""Legal hold: a person or one conversation that no deletion path may remove until the hold is lifted.

Every deletion path (the purge, a person deleting their own conversation, an admin deleting a user) asks
`is_held` / `held_subjects` inside its own deleting transaction, so a hold placed mid-purge wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.db.models import Conversation, LegalHold, User

SubjectType = Literal["user", "conversation"]


class HoldError(ValueError):
    """A hold request that cannot be applied; the message is shown as is."""


class HeldError(Exception):
    """Raised by a deletion path when what it was asked to delete is under legal hold."""


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(
        LegalHold.placed_at <= now,
        or_(LegalHold.lifted_at.is_(None), LegalHold.lifted_at > now),
    )


@dataclass(frozen=True)
class HeldSubjects:
    """Everything under an active hold right now: people (all their data) and single conversations."""

    user_ids: frozenset[str]
    conversation_ids: frozenset[str]

    def holds_conversation(self, conversation_id: str, owner_id: str) -> bool:
        return conversation_id in self.conversation_ids or owner_id in self.user_ids


async def held_subjects(session: AsyncSession, now: datetime) -> HeldSubjects:
    rows = (await session.execute(select(LegalHold.subject_type, LegalHold.subject_id).where(_active(now)))).all()
    return HeldSubjects(
        user_ids=frozenset(sid for kind, sid in rows if kind == "user"),
        conversation_ids=frozenset(sid for kind, sid in rows if kind == "conversation"),
    )


async def is_held(
    session: AsyncSession, *, user_id: str | None = None, conversation_id: str | None = None, now: datetime
) -> bool:
    """True when the person, or the conversation (directly or through its owner), is under an active hold."""
    if user_id is None and conversation_id is None:
        raise ValueError("is_held needs a user_id or a conversation_id")
    conditions = []
    owner_ids: set[str] = set()
    if user_id is not None:
        owner_ids.add(user_id)
    if conversation_id is not None:
        conditions.append(and_(LegalHold.subject_type == "conversation", LegalHold.subject_id == conversation_id))
        owner = (
            await session.execute(select(Conversation.user_id).where(Conversation.id == conversation_id))
        ).scalar_one_or_none()
        if owner is not None:
            owner_ids.add(owner)
    if owner_ids:
        conditions.append(and_(LegalHold.subject_type == "user", LegalHold.subject_id.in_(sorted(owner_ids))))
    row = await session.execute(select(LegalHold.id).where(_active(now), or_(*conditions)).limit(1))
    return row.first() is not None


async def place_hold(
    session: AsyncSession,
    *,
    subject_type: SubjectType,
    subject_id: str,
    reason: str,
    case_reference: str,
    now: datetime,
    context: AuditContext,
) -> LegalHold:
    reason, case_reference, subject_id = reason.strip(), case_reference.strip(), subject_id.strip()
    if subject_type not in ("user", "conversation"):
        raise HoldError("A hold is placed on a person or on a conversation.")
    if not reason:
        raise HoldError("State the reason for the hold.")
    if not case_reference:
        raise HoldError("Give the case reference the hold belongs to.")
    model = User if subject_type == "user" else Conversation
    # On PostgreSQL the subject's row lock orders this hold against a purge batch deleting it (which locks the
    # same rows): either the purge sees the hold, or the hold finds the subject already gone.
    locking = session.bind is not None and session.bind.dialect.name != "sqlite"
    if await session.get(model, subject_id, with_for_update=locking) is None:
        raise HoldError(f"There is no {'person' if subject_type == 'user' else 'conversation'} with id {subject_id!r}.")
    hold = LegalHold(
        subject_type=subject_type,
        subject_id=subject_id,
        reason=reason,
        case_reference=case_reference[:200],
        placed_by=context.user_id,
        placed_at=now,
    )
    session.add(hold)
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="hold.placed",
        context=context,
        object_type=subject_type,
        object_ids=[subject_id, hold.id],
        detail={"hold_id": hold.id, "case_reference": hold.case_reference},
    )
    return hold


async def lift_hold(session: AsyncSession, *, hold_id: str, now: datetime, context: AuditContext) -> LegalHold:
    hold = await session.get(LegalHold, hold_id)
    if hold is None:
        raise HoldError("There is no such hold.")
    if hold.lifted_at is not None:
        raise HoldError("That hold was already lifted.")
    hold.lifted_at = now
    hold.lifted_by = context.user_id
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="hold.lifted",
        context=context,
        object_type=hold.subject_type,
        object_ids=[hold.subject_id, hold.id],
        detail={"hold_id": hold.id, "case_reference": hold.case_reference},
    )
    return hold


async def list_holds(session: AsyncSession, *, include_lifted: bool = False) -> Sequence[LegalHold]:
    stmt = select(LegalHold).order_by(LegalHold.placed_at.desc())
    if not include_lifted:
        stmt = stmt.where(LegalHold.lifted_at.is_(None))
    return (await session.execute(stmt)).scalars().all()


async def audit_skips(
    session: AsyncSession,
    *,
    path: str,
    conversation_ids: Iterable[str],
    now: datetime,
    context: AuditContext,
    detail: dict[str, object] | None = None,
) -> None:
    """One record naming what a deletion path left alone because of a hold."""
    ids = sorted(set(conversation_ids))
    if not ids:
        return
    await append_audit(
        session,
        at=now,
        action="hold.skip",
        context=context,
        object_type="conversation",
        object_ids=ids,
        outcome="denied",
        detail={"path": path, "count": len(ids), **(detail or {})},
    )
