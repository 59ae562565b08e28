"""Records requests: one person's conversations, the passages cited to them and their access log, as a zip of
JSON plus a readable HTML page. The same export serves an admin's records request and a person's own download."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.assets import asset_path
from portal.audit import AuditContext, append_audit
from portal.db.models import (
    AuditEvent,
    Citation,
    Conversation,
    Document,
    DocumentChunk,
    Feedback,
    Message,
    User,
)
from portal.governance.audit_trail import event_dict

TEMPLATES_DIR = asset_path("templates")
_ENV = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(default=True))


@dataclass
class RecordsExport:
    filename: str
    content: bytes
    conversations: int
    messages: int
    access_records: int


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


async def person_record(session: AsyncSession, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "display_name": user.display_name,
        "email": user.email,
        "status": user.status,
        "roles": sorted(r.role for r in user.roles),
        "created_at": _iso(user.created_at),
        "last_login_at": _iso(user.last_login_at),
    }


async def conversations_record(session: AsyncSession, user_id: str) -> list[dict[str, Any]]:
    """Their conversations with every message, the passages cited with each answer, and their feedback."""
    conversations = (
        await session.execute(select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.created_at))
    ).scalars().all()
    result = []
    for conversation in conversations:
        messages = (
            await session.execute(
                select(Message).where(Message.conversation_id == conversation.id)
                .order_by(Message.created_at, Message.role.desc())
            )
        ).scalars().all()
        message_ids = [m.id for m in messages]
        citations = (
            (await session.execute(select(Citation).where(Citation.message_id.in_(message_ids)).order_by(Citation.ordinal)))
            .scalars().all()
            if message_ids else []
        )
        chunks = await _chunks(session, {c.chunk_id for c in citations})
        titles = await _document_titles(session, {c.document_id for c in citations})
        feedback = (
            (await session.execute(select(Feedback).where(Feedback.message_id.in_(message_ids), Feedback.user_id == user_id)))
            .scalars().all()
            if message_ids else []
        )
        feedback_by_message = {f.message_id: f for f in feedback}
        result.append({
            "id": conversation.id,
            "title": conversation.title,
            "created_at": _iso(conversation.created_at),
            "last_activity_at": _iso(conversation.updated_at),
            "messages": [
                {
                    "id": m.id,
                    "role": m.role,
                    "text": m.content,
                    "status": m.status,
                    "model": m.model,
                    "created_at": _iso(m.created_at),
                    "passages": [
                        {
                            "number": c.ordinal,
                            "cited_in_answer": c.cited,
                            "document_id": c.document_id,
                            "document_title": titles.get(c.document_id),
                            "chunk_id": c.chunk_id,
                            # The passage as it is stored now; None when its document has since been removed.
                            "text": chunks.get(c.chunk_id),
                        }
                        for c in citations if c.message_id == m.id
                    ],
                    "feedback": (
                        {"rating": feedback_by_message[m.id].rating, "comment": feedback_by_message[m.id].comment}
                        if m.id in feedback_by_message else None
                    ),
                }
                for m in messages
            ],
        })
    return result


async def _chunks(session: AsyncSession, chunk_ids: set[str]) -> dict[str, str]:
    if not chunk_ids:
        return {}
    rows = await session.execute(select(DocumentChunk.id, DocumentChunk.text).where(DocumentChunk.id.in_(sorted(chunk_ids))))
    return {chunk_id: text for chunk_id, text in rows}


async def _document_titles(session: AsyncSession, document_ids: set[str]) -> dict[str, str]:
    if not document_ids:
        return {}
    rows = await session.execute(
        select(Document.id, Document.title, Document.filename).where(Document.id.in_(sorted(document_ids)))
    )
    return {doc_id: title or filename for doc_id, title, filename in rows}


async def access_log_record(session: AsyncSession, user_id: str, conversation_ids: list[str]) -> list[dict[str, Any]]:
    """Their audit records (what they did) and records about them (break-glass reads, holds, exports, deletions)."""
    conditions = [AuditEvent.user_id == user_id]
    if conversation_ids:
        # Records naming one of their conversations; object_ids is JSON, so match candidates by action first.
        conditions.append(AuditEvent.action.in_(["breakglass.read", "hold.placed", "hold.lifted", "hold.skip"]))
    conditions.append(AuditEvent.action.in_(["records.exported", "user.deleted_except_held", "user.deleted"]))
    rows = (await session.execute(select(AuditEvent).where(or_(*conditions)).order_by(AuditEvent.seq))).scalars().all()
    wanted = {user_id, *conversation_ids}
    return [event_dict(e) for e in rows if e.user_id == user_id or wanted & set(e.object_ids or [])]


async def build_records_export(
    session: AsyncSession, *, user_id: str, actor: AuditContext, now: datetime, requested_by: str
) -> RecordsExport:
    """The zip for one person (audited as `records.exported`, requested_by "admin" or "self")."""
    user = await session.get(User, user_id)
    if user is None:
        raise LookupError("There is no such person.")
    person = await person_record(session, user)
    conversations = await conversations_record(session, user_id)
    # Write the audit record first, so the export it describes appears in the access log it contains.
    await append_audit(
        session, at=now, action="records.exported", context=actor, object_type="user", object_ids=[user_id],
        detail={"requested_by": requested_by, "conversations": len(conversations)},
    )
    access_log = await access_log_record(session, user_id, [c["id"] for c in conversations])
    exported_at = _iso(now)
    document = {"exported_at": exported_at, "person": person, "conversations": conversations, "access_log": access_log}
    html = _ENV.get_template("governance/records_export.html.j2").render(**document)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", html)
        archive.writestr("person.json", _json(person))
        archive.writestr("conversations.json", _json(conversations))
        archive.writestr("access_log.json", _json(access_log))
        archive.writestr("README.txt", README.format(exported_at=exported_at))
    stamp = now.strftime("%Y%m%d-%H%M%S")
    return RecordsExport(
        filename=f"enclave-records-{user_id[:8]}-{stamp}.zip",
        content=buffer.getvalue(),
        conversations=len(conversations),
        messages=sum(len(c["messages"]) for c in conversations),
        access_records=len(access_log),
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)


README = """Enclave records export, made {exported_at} (UTC).

index.html          the same records as a readable page
person.json         who the export is about: name, email, roles
conversations.json  every conversation kept for them: questions, answers, the passages shown with each answer
access_log.json     their audit records: sign-ins, questions (without text), reads of their conversations by
                    administrators (break-glass), legal holds and exports concerning them
"""
