"""Break-glass: an admin reads someone else's conversation only by stating a reason; audited, and the person is
told on their next visit (access notices)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.db.models import AccessNotice, Citation, Conversation, Message, User

MIN_REASON_CHARS = 10


class BreakGlassRefused(ValueError):
    """No (or too short a) reason; the message says what is needed."""


@dataclass(frozen=True)
class ConversationSummary:
    """What an admin sees before breaking the glass: that a conversation exists, never what it says."""

    id: str
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass
class BreakGlassRead:
    conversation: Conversation
    owner: User
    messages: Sequence[Message]
    citations: dict[str, list[Citation]]


async def conversation_summaries(session: AsyncSession, user_id: str) -> list[ConversationSummary]:
    conversations = (
        await session.execute(
            select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.updated_at.desc())
        )
    ).scalars().all()
    summaries = []
    for conversation in conversations:
        count = len((await session.execute(select(Message.id).where(Message.conversation_id == conversation.id))).all())
        summaries.append(ConversationSummary(conversation.id, conversation.created_at, conversation.updated_at, count))
    return summaries


async def break_glass_read(
    session: AsyncSession,
    *,
    conversation_id: str,
    reason: str,
    actor: AuditContext,
    now: datetime,
    notify_owner: bool,
) -> BreakGlassRead:
    """Open another person's conversation for an admin. Refused (and the refusal audited) without a reason."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise LookupError("There is no such conversation.")
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        await append_audit(
            session, at=now, action="breakglass.read", context=actor, object_type="conversation",
            object_ids=[conversation_id], outcome="denied",
            detail={"owner_id": conversation.user_id, "why_refused": "no reason stated"},
        )
        raise BreakGlassRefused(
            f"State why you need to read this conversation (at least {MIN_REASON_CHARS} characters). "
            "The reason is recorded and shown to the person."
        )
    owner = await session.get(User, conversation.user_id)
    assert owner is not None  # conversations.user_id is a non-null foreign key
    await append_audit(
        session, at=now, action="breakglass.read", context=actor, object_type="conversation",
        object_ids=[conversation_id], detail={"owner_id": owner.id, "reason": reason, "owner_notified": notify_owner},
    )
    if notify_owner and owner.id != actor.user_id:
        session.add(AccessNotice(user_id=owner.id, actor_id=actor.user_id, conversation_id=conversation_id,
                                 reason=reason, created_at=now))
    messages = (
        await session.execute(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at, Message.role.desc())
        )
    ).scalars().all()
    citations: dict[str, list[Citation]] = {m.id: [] for m in messages}
    if messages:
        rows = await session.execute(
            select(Citation).where(Citation.message_id.in_([m.id for m in messages])).order_by(Citation.ordinal)
        )
        for citation in rows.scalars():
            citations[citation.message_id].append(citation)
    await session.flush()
    return BreakGlassRead(conversation=conversation, owner=owner, messages=messages, citations=citations)


@dataclass(frozen=True)
class PendingNotice:
    id: str
    created_at: datetime
    reason: str
    actor_name: str
    conversation_title: str | None


async def pending_notices(session: AsyncSession, user_id: str) -> list[PendingNotice]:
    """Break-glass reads of this person's conversations they have not acknowledged yet, oldest first."""
    rows = (
        await session.execute(
            select(AccessNotice, User.display_name, Conversation.title)
            .outerjoin(User, User.id == AccessNotice.actor_id)
            .outerjoin(Conversation, Conversation.id == AccessNotice.conversation_id)
            .where(AccessNotice.user_id == user_id, AccessNotice.seen_at.is_(None))
            .order_by(AccessNotice.created_at)
        )
    ).all()
    return [
        PendingNotice(notice.id, notice.created_at, notice.reason, actor_name or "An administrator", title)
        for notice, actor_name, title in rows
    ]


async def acknowledge_notice(session: AsyncSession, *, notice_id: str, user_id: str, now: datetime) -> bool:
    notice = await session.get(AccessNotice, notice_id)
    if notice is None or notice.user_id != user_id or notice.seen_at is not None:
        return False
    notice.seen_at = now
    await session.flush()
    return True
