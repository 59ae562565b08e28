"""A person's own conversations: list, open, rename, delete (unless under legal hold), search, feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from portal.audit import AuditContext, append_audit
from portal.db.engine import on_async_session
from portal.db.models import Citation, Conversation, Feedback, Message
from portal.principal import Principal

TITLE_LENGTH = 80
SIDEBAR_SIZE = 50


class ChatNotFound(LookupError):
    """No such conversation or message for this person (someone else's reads the same as none)."""


HELD_MESSAGE = (
    "This conversation is under a legal hold, so it cannot be deleted now. "
    "It will be removed under the normal retention rules once the hold is lifted."
)


def title_from_question(question: str) -> str:
    words = " ".join(question.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


async def list_conversations(session: AsyncSession, user_id: str, limit: int = SIDEBAR_SIZE) -> Sequence[Conversation]:
    rows = await session.execute(
        select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.updated_at.desc()).limit(limit)
    )
    return rows.scalars().all()


def owned_conversation_in_unit(session: Session, user_id: str, conversation_id: str) -> Conversation:
    """The person's own conversation, or ChatNotFound; `owned_conversation` for an async session."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise ChatNotFound("That conversation does not exist, or it is not yours.")
    return conversation


owned_conversation = on_async_session(owned_conversation_in_unit)


async def owned_message(session: AsyncSession, user_id: str, message_id: str) -> tuple[Message, Conversation]:
    row = (
        await session.execute(
            select(Message, Conversation)
            .join(Conversation, Conversation.id == Message.conversation_id)
            .where(Message.id == message_id)
        )
    ).one_or_none()
    if row is None or row[1].user_id != user_id:
        raise ChatNotFound("That answer does not exist, or it is not yours.")
    return row[0], row[1]


async def conversation_messages(session: AsyncSession, conversation_id: str) -> Sequence[Message]:
    rows = await session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.created_at, Message.role.desc())
    )
    return rows.scalars().all()


async def citations_by_message(session: AsyncSession, message_ids: Sequence[str]) -> dict[str, list[Citation]]:
    found: dict[str, list[Citation]] = {mid: [] for mid in message_ids}
    if not message_ids:
        return found
    rows = await session.execute(
        select(Citation).where(Citation.message_id.in_(list(message_ids))).order_by(Citation.ordinal)
    )
    for citation in rows.scalars():
        found[citation.message_id].append(citation)
    return found


async def feedback_by_message(session: AsyncSession, user_id: str, message_ids: Sequence[str]) -> dict[str, Feedback]:
    if not message_ids:
        return {}
    rows = await session.execute(
        select(Feedback).where(Feedback.user_id == user_id, Feedback.message_id.in_(list(message_ids)))
    )
    return {f.message_id: f for f in rows.scalars()}


async def rename_conversation(
    session: AsyncSession, principal: Principal, conversation_id: str, title: str, now: datetime
) -> Conversation:
    conversation = await owned_conversation(session, principal.user_id, conversation_id)
    cleaned = " ".join(title.split())[:200]
    if not cleaned:
        raise ValueError("A conversation needs a name.")
    conversation.title = cleaned
    return conversation


@dataclass(frozen=True)
class HistoryMatch:
    conversation_id: str
    conversation_title: str
    message_id: str
    role: str
    snippet: str
    created_at: datetime


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _snippet(content: str, query: str, width: int = 160) -> str:
    at = content.lower().find(query.lower())
    start = max(0, at - width // 2) if at >= 0 else 0
    piece = content[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(content) else "")


async def search_history(session: AsyncSession, user_id: str, query: str, limit: int = 50) -> list[HistoryMatch]:
    """The person's own messages and conversation titles containing `query` (case-insensitive)."""
    needle = " ".join(query.split())
    if not needle:
        return []
    pattern = f"%{_like_escape(needle.lower())}%"
    rows = await session.execute(
        select(Conversation.id, Conversation.title, Message.id, Message.role, Message.content, Message.created_at)
        .join(Message, Message.conversation_id == Conversation.id)
        .where(
            Conversation.user_id == user_id,
            or_(
                func.lower(Message.content).like(pattern, escape="\\"),
                func.lower(Conversation.title).like(pattern, escape="\\"),
            ),
        )
        .order_by(Message.created_at.desc())
        .limit(limit)
    )
    return [
        HistoryMatch(cid, title, mid, role, _snippet(content, needle), created)
        for cid, title, mid, role, content, created in rows.all()
    ]


async def save_feedback(
    session: AsyncSession,
    principal: Principal,
    message_id: str,
    rating: int,
    comment: str,
    now: datetime,
    context: AuditContext,
) -> Feedback:
    if rating not in (1, -1):
        raise ValueError("Feedback is a thumbs up or a thumbs down.")
    message, _conversation = await owned_message(session, principal.user_id, message_id)
    if message.role != "assistant":
        raise ChatNotFound("Feedback is given on answers.")
    existing = (
        await session.execute(select(Feedback).where(Feedback.message_id == message.id, Feedback.user_id == principal.user_id))
    ).scalar_one_or_none()
    comment = comment.strip()[:2000]
    if existing is None:
        existing = Feedback(message_id=message.id, user_id=principal.user_id, rating=rating, comment=comment, created_at=now)
        session.add(existing)
    else:
        existing.rating, existing.comment, existing.created_at = rating, comment, now
    await session.flush()
    await append_audit(
        session, at=now, action="chat.feedback", context=context, object_type="message", object_ids=[message.id],
        detail={"rating": rating, "has_comment": bool(comment)},
    )
    return existing
