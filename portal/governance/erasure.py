"""Erasing conversations and people: database rows first (with the hold re-check), then files and vectors.

Files on disk and vectors cannot join a database transaction, so the transaction that deletes the rows also
writes one "pending erasure" entry per attached file into kv_store. `finish_pending_erasures` then removes the
file and its vectors and only afterwards drops the entry: an interrupted erasure is finished by the next run
(purge or not), and a held conversation never loses its files because the entry only exists once its rows
are gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext, append_audit
from portal.db.engine import transaction
from portal.db.models import (
    AccessNotice,
    Attachment,
    Citation,
    Conversation,
    Feedback,
    KeyValue,
    Message,
    User,
    UserSession,
)
from portal.governance.holds import HeldError, audit_skips, held_subjects, is_held
from portal.logging import get_logger
from rag.store import VectorStore

log = get_logger(__name__)

PENDING_PREFIX = "governance:erase:"
KINDS = ("conversations", "messages", "citations", "feedback", "attachments", "cache_entries")


@dataclass
class ErasedCounts:
    """How many records of each kind one erasure removed (each counted once, by the transaction that did it)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def add(self, other: ErasedCounts) -> None:
        for kind, n in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + n


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def lock_for_update(session: AsyncSession) -> bool:
    """Row locks are PostgreSQL's; SQLite runs each transaction as BEGIN IMMEDIATE, which serialises writers."""
    return session.bind is not None and session.bind.dialect.name != "sqlite"


async def erase_conversation_rows(session: AsyncSession, conversation_ids: Sequence[str]) -> ErasedCounts:
    """Delete these conversations and everything hanging off them, inside the caller's transaction.

    The caller has already re-checked holds in this transaction. Attached files and their vectors are queued
    for `finish_pending_erasures`.
    """
    erased = ErasedCounts()
    ids = list(conversation_ids)
    if not ids:
        return erased
    message_ids = list(
        (await session.execute(select(Message.id).where(Message.conversation_id.in_(ids)))).scalars()
    )
    attachments = (
        await session.execute(select(Attachment.id, Attachment.storage_path).where(Attachment.conversation_id.in_(ids)))
    ).all()
    c = erased.counts
    for start in range(0, len(message_ids), 500):
        part = message_ids[start : start + 500]
        c["citations"] += _rowcount(await session.execute(delete(Citation).where(Citation.message_id.in_(part))))
        c["feedback"] += _rowcount(await session.execute(delete(Feedback).where(Feedback.message_id.in_(part))))
    c["cache_entries"] += await _erase_cache_entries(session, [*ids, *message_ids, *(a.id for a in attachments)])
    for attachment_id, storage_path in attachments:
        queue_file_and_vector_erasure(session, attachment_id, storage_path)
    c["attachments"] += _rowcount(await session.execute(delete(Attachment).where(Attachment.conversation_id.in_(ids))))
    c["messages"] += _rowcount(await session.execute(delete(Message).where(Message.conversation_id.in_(ids))))
    await session.execute(delete(AccessNotice).where(AccessNotice.conversation_id.in_(ids)))
    c["conversations"] += _rowcount(await session.execute(delete(Conversation).where(Conversation.id.in_(ids))))
    await session.flush()
    return erased


def queue_file_and_vector_erasure(session: AsyncSession, record_id: str, storage_path: str | None) -> None:
    """Queue the removal of a record's stored file and of its vectors (stored under the record's id)."""
    # The key holds the id; the value the path, so the file can be found once the row is gone.
    session.add(KeyValue(key=PENDING_PREFIX + record_id, value=json.dumps({"path": storage_path}).encode()))


async def _erase_cache_entries(session: AsyncSession, record_ids: Iterable[str]) -> int:
    """kv_store entries whose key names one of these records (answer caches, stream buffers...)."""
    ids = [i for i in record_ids if i]
    removed = 0
    for start in range(0, len(ids), 50):
        part = ids[start : start + 50]
        condition = or_(*(KeyValue.key.contains(i, autoescape=True) for i in part))
        removed += _rowcount(
            await session.execute(
                delete(KeyValue).where(condition, KeyValue.key.not_like(PENDING_PREFIX + "%")).execution_options(
                    synchronize_session=False
                )
            )
        )
    return removed


# Files and vectors ---------------------------------------------------------------------------------------


@dataclass
class FinishedErasures:
    files: int = 0
    vectors: int = 0
    entries: int = 0
    left_pending: int = 0


def resolve_stored_file(files_path: Path, storage_path: str | None) -> Path | None:
    """The file a storage_path names, only when it lies under files_path (never delete outside it)."""
    if not storage_path:
        return None
    root = files_path.resolve()
    candidate = Path(storage_path)
    candidate = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if candidate == root or root not in candidate.parents:
        log.warning("erase_refused_outside_files_path")
        return None
    return candidate


def remove_stored_file(files_path: Path, storage_path: str | None) -> bool:
    path = resolve_stored_file(files_path, storage_path)
    if path is None or not path.exists():
        return False
    path.unlink()
    # Chat and ingestion keep one folder per record; drop it when it is left empty.
    parent = path.parent
    if parent != files_path.resolve() and not any(parent.iterdir()):
        parent.rmdir()
    return True


async def finish_pending_erasures(
    factory: async_sessionmaker[AsyncSession], store: VectorStore | None, files_path: Path, batch_size: int = 100
) -> FinishedErasures:
    """Remove the files and vectors of erased attachments and documents, then their entries. Safe to re-run."""
    done = FinishedErasures()
    after = ""
    while True:
        async with factory() as session:
            rows = (
                await session.execute(
                    select(KeyValue.key, KeyValue.value)
                    .where(KeyValue.key.like(PENDING_PREFIX + "%"), KeyValue.key > after)
                    .order_by(KeyValue.key)
                    .limit(batch_size)
                )
            ).all()
        if not rows:
            return done
        after = rows[-1][0]
        finished: list[str] = []
        for key, value in rows:
            if store is None:
                done.left_pending += 1  # the vectors cannot be removed now: keep the entry for the next run
                continue
            record_id = key.removeprefix(PENDING_PREFIX)
            done.vectors += await store.count(document_id=record_id)
            await store.delete_document(record_id)
            if remove_stored_file(files_path, json.loads(value).get("path")):
                done.files += 1
            finished.append(key)
        if finished:
            async with transaction(factory) as session:
                result = await session.execute(delete(KeyValue).where(KeyValue.key.in_(finished)))
                done.entries += _rowcount(result)


# The deletion paths people and admins use ------------------------------------------------------------------


@dataclass
class ConversationDeletion:
    erased: ErasedCounts
    held: bool  # True: refused because of a legal hold (the refusal is audited; nothing was deleted)


async def delete_conversation(
    session: AsyncSession,
    conversation_id: str,
    actor: AuditContext,
    *,
    now: datetime,
    as_admin: bool = False,
) -> ConversationDeletion:
    """A person deletes their own conversation (or an admin any); refused under legal hold. Audited either way.

    Runs inside the caller's transaction and does not raise for a hold, so the audited refusal commits with
    it; `delete_conversation_and_files` is the whole path (commit, files and vectors, HeldError).
    Raises LookupError when the conversation does not exist or is not theirs.
    """
    query = select(Conversation).where(Conversation.id == conversation_id)
    if lock_for_update(session):
        query = query.with_for_update()
    conversation = (await session.execute(query)).scalar_one_or_none()
    if conversation is None or (not as_admin and conversation.user_id != actor.user_id):
        raise LookupError("There is no such conversation.")
    if await is_held(session, conversation_id=conversation_id, now=now):
        await audit_skips(session, path="conversation.delete", conversation_ids=[conversation_id], now=now, context=actor)
        return ConversationDeletion(erased=ErasedCounts(), held=True)
    erased = await erase_conversation_rows(session, [conversation_id])
    await append_audit(
        session,
        at=now,
        action="conversation.deleted",
        context=actor,
        object_type="conversation",
        object_ids=[conversation_id],
        detail={"kinds": erased.counts, "owner_id": conversation.user_id},
    )
    return ConversationDeletion(erased=erased, held=False)


async def delete_conversation_and_files(
    factory: async_sessionmaker[AsyncSession],
    store: VectorStore | None,
    files_path: Path,
    conversation_id: str,
    actor: AuditContext,
    *,
    now: datetime,
    as_admin: bool = False,
) -> ErasedCounts:
    """The whole deletion: rows (own transaction), then attached files and vectors. HeldError when held."""
    async with transaction(factory) as session:
        result = await delete_conversation(session, conversation_id, actor, now=now, as_admin=as_admin)
    if result.held:
        raise HeldError("This conversation is under legal hold and cannot be deleted now.")
    await finish_pending_erasures(factory, store, files_path)
    return result.erased


@dataclass
class UserErasure:
    erased: ErasedCounts
    held_conversation_ids: list[str]
    user_removed: bool


async def delete_user(session: AsyncSession, user_id: str, actor: AuditContext, *, now: datetime) -> UserErasure:
    """An admin deletes a person: all their conversations except held ones; the person's record itself only
    when nothing of theirs is held (otherwise they are deactivated and the held data keeps its owner)."""
    user = await session.get(User, user_id, with_for_update=lock_for_update(session))
    if user is None:
        raise LookupError("There is no such person.")
    held = await held_subjects(session, now)
    conversations = (await session.execute(select(Conversation.id).where(Conversation.user_id == user_id))).scalars()
    keep: list[str] = []
    go: list[str] = []
    for conversation_id in conversations:
        (keep if held.holds_conversation(conversation_id, user_id) else go).append(conversation_id)
    erased = await erase_conversation_rows(session, go)
    erased.counts["feedback"] += _rowcount(await session.execute(delete(Feedback).where(Feedback.user_id == user_id)))
    await session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    user_held = user_id in held.user_ids
    if user_held or keep:
        user.status = "deactivated"
        user.deactivated_at = now
        await audit_skips(session, path="user.delete", conversation_ids=keep, now=now, context=actor,
                          detail={"user_id": user_id, "user_held": user_held})
    else:
        await session.delete(user)
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="user.deleted" if not (user_held or keep) else "user.deleted_except_held",
        context=actor,
        object_type="user",
        object_ids=[user_id],
        detail={"kinds": erased.counts, "held_conversations": len(keep)},
    )
    return UserErasure(erased=erased, held_conversation_ids=keep, user_removed=not (user_held or keep))
