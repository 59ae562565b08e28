"""The retention purge: expired conversations (by each owner's policy), expired documents, old audit records.

Every batch is its own transaction that re-checks holds and expiry, deletes, and appends a `purge.batch`
audit record naming what it deleted, so an interrupted run leaves exact records of what it did and a re-run
finishes the rest without counting anything twice. The run ends with one `purge.receipt` record.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import SYSTEM_CONTEXT, append_audit, prune_audit
from portal.db.engine import transaction
from portal.db.models import (
    Collection,
    Conversation,
    Document,
    DocumentChunk,
    IngestionJob,
    RoleAssignment,
    User,
)
from portal.governance.erasure import (
    KINDS,
    ErasedCounts,
    FinishedErasures,
    erase_conversation_rows,
    finish_pending_erasures,
    lock_for_update,
    queue_file_and_vector_erasure,
)
from portal.governance.holds import audit_skips, held_subjects
from portal.governance.retention import RetentionDecision, decide_retention, load_policies
from portal.logging import get_logger
from portal.metrics import record_purge_receipt
from portal.settings import Settings
from rag.store import VectorStore

log = get_logger(__name__)

BatchHook = Callable[[Sequence[str]], Awaitable[None]]


@dataclass
class PolicyCounts:
    days: int
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


@dataclass
class PurgeReport:
    run_id: str
    policies: dict[str, PolicyCounts] = field(default_factory=dict)
    documents: dict[str, int] = field(default_factory=lambda: {"documents": 0, "chunks": 0, "expiry_set": 0})
    files_and_vectors: FinishedErasures = field(default_factory=FinishedErasures)
    held_skipped: set[str] = field(default_factory=set)
    batches: int = 0
    audit_pruned: int = 0
    audit_prune_refused: list[str] = field(default_factory=list)  # a broken chain is never pruned
    complete: bool = True

    @property
    def conversations(self) -> int:
        return sum(p.kinds["conversations"] for p in self.policies.values())

    def receipt(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "complete": self.complete,
            "policies": {name: {"days": p.days, "kinds": p.kinds} for name, p in sorted(self.policies.items())},
            "documents": self.documents,
            "files_erased": self.files_and_vectors.files,
            "vectors_erased": self.files_and_vectors.vectors,
            "erasures_left_pending": self.files_and_vectors.left_pending,
            "held_skipped": len(self.held_skipped),
            "batches": self.batches,
            "audit_records_pruned": self.audit_pruned,
            "audit_prune_refused_problems": len(self.audit_prune_refused),
        }


def _add_finished(total: FinishedErasures, part: FinishedErasures) -> None:
    total.files += part.files
    total.vectors += part.vectors
    total.entries += part.entries
    total.left_pending = part.left_pending  # what the last pass could not finish


# Conversations ---------------------------------------------------------------------------------------------


async def _owners_by_decision(
    session: AsyncSession, default_days: int
) -> dict[RetentionDecision, list[str]]:
    policies = await load_policies(session)
    owners = list((await session.execute(select(Conversation.user_id).distinct())).scalars())
    roles: dict[str, list[str]] = defaultdict(list)
    for start in range(0, len(owners), 1000):
        part = owners[start : start + 1000]
        for user_id, role in await session.execute(
            select(RoleAssignment.user_id, RoleAssignment.role).where(RoleAssignment.user_id.in_(part))
        ):
            roles[user_id].append(role)
    groups: dict[RetentionDecision, list[str]] = defaultdict(list)
    for owner in owners:
        groups[decide_retention(policies, roles.get(owner, []), default_days)].append(owner)
    return groups


async def purge_expired_conversations(
    factory: async_sessionmaker[AsyncSession],
    report: PurgeReport,
    *,
    now: datetime,
    default_days: int,
    batch_size: int = 50,
    max_batches: int | None = None,
    before_each_delete: BatchHook | None = None,
) -> None:
    """Delete conversations whose last activity is older than their owner's retention period, except held ones.

    `max_batches` stops early (report.complete = False), as an interrupted run would; `before_each_delete`
    lets drills and tests act between choosing a batch and deleting it (a hold placed there must win).
    """
    async with factory() as session:
        groups = await _owners_by_decision(session, default_days)
    for decision, owners in sorted(groups.items(), key=lambda item: item[0].policy):
        cutoff = now - timedelta(days=decision.days)
        counts = report.policies.setdefault(decision.policy, PolicyCounts(days=decision.days))
        for start in range(0, len(owners), 1000):
            owner_part = owners[start : start + 1000]
            while True:
                if max_batches is not None and report.batches >= max_batches:
                    report.complete = False
                    return
                async with factory() as session:
                    held = await held_subjects(session, now)
                    query = (
                        select(Conversation.id)
                        .where(Conversation.user_id.in_(owner_part), Conversation.updated_at <= cutoff)
                        .order_by(Conversation.id)
                        .limit(batch_size)
                    )
                    if held.user_ids:
                        query = query.where(Conversation.user_id.not_in(sorted(held.user_ids)))
                    if held.conversation_ids:
                        query = query.where(Conversation.id.not_in(sorted(held.conversation_ids)))
                    candidates = list((await session.execute(query)).scalars())
                if not candidates:
                    break
                if before_each_delete is not None:
                    await before_each_delete(candidates)
                erased = await _delete_conversation_batch(factory, report, candidates, cutoff, decision, now)
                for kind, n in erased.counts.items():
                    counts.kinds[kind] += n
    # Name what was left alone because of a hold (once per run, all ids in one record).
    async with transaction(factory) as session:
        held = await held_subjects(session, now)
        if held.user_ids or held.conversation_ids:
            for decision, owners in groups.items():
                cutoff = now - timedelta(days=decision.days)
                for start in range(0, len(owners), 1000):
                    rows = await session.execute(
                        select(Conversation.id).where(
                            Conversation.user_id.in_(owners[start : start + 1000]),
                            Conversation.updated_at <= cutoff,
                            or_(
                                Conversation.user_id.in_(sorted(held.user_ids)),
                                Conversation.id.in_(sorted(held.conversation_ids)),
                            ),
                        )
                    )
                    report.held_skipped.update(rows.scalars())
        await audit_skips(
            session, path="purge", conversation_ids=report.held_skipped, now=now, context=SYSTEM_CONTEXT,
            detail={"run_id": report.run_id},
        )


async def _delete_conversation_batch(
    factory: async_sessionmaker[AsyncSession],
    report: PurgeReport,
    candidates: Sequence[str],
    cutoff: datetime,
    decision: RetentionDecision,
    now: datetime,
) -> ErasedCounts:
    async with transaction(factory) as session:
        # Re-check inside the deleting transaction: still expired (no new activity) and not held by now.
        query = select(Conversation.id, Conversation.user_id).where(
            Conversation.id.in_(list(candidates)), Conversation.updated_at <= cutoff
        )
        if lock_for_update(session):
            query = query.with_for_update()
        rows = (await session.execute(query)).all()
        if lock_for_update(session) and rows:
            owners = sorted({owner for _, owner in rows})
            await session.execute(select(User.id).where(User.id.in_(owners)).with_for_update(read=True))
        held = await held_subjects(session, now)
        go = [cid for cid, owner in rows if not held.holds_conversation(cid, owner)]
        report.held_skipped.update(cid for cid, owner in rows if held.holds_conversation(cid, owner))
        erased = await erase_conversation_rows(session, go)
        if go:
            await append_audit(
                session,
                at=now,
                action="purge.batch",
                context=SYSTEM_CONTEXT,
                object_type="conversation",
                object_ids=go,
                detail={
                    "run_id": report.run_id,
                    "policy": decision.policy,
                    "retention_days": decision.days,
                    "kinds": erased.counts,
                },
            )
    report.batches += 1
    return erased


# Documents -------------------------------------------------------------------------------------------------


async def stamp_collection_expiries(factory: async_sessionmaker[AsyncSession], report: PurgeReport) -> None:
    """Documents in a collection with a time-to-live get their expiry date (upload + TTL) if they lack one,
    so retrieval stops returning them at that moment even before the purge removes them."""
    async with transaction(factory) as session:
        ttls = (
            await session.execute(
                select(Collection.id, Collection.document_ttl_days).where(Collection.document_ttl_days.is_not(None))
            )
        ).all()
        for collection_id, days in ttls:
            documents = (
                await session.execute(
                    select(Document).where(Document.collection_id == collection_id, Document.expires_at.is_(None))
                )
            ).scalars()
            for document in documents:
                document.expires_at = document.created_at + timedelta(days=int(days or 0))
                report.documents["expiry_set"] += 1


async def purge_expired_documents(
    factory: async_sessionmaker[AsyncSession], report: PurgeReport, *, now: datetime, batch_size: int = 50
) -> None:
    """Delete documents past their expiry: rows and chunk text now, stored file and vectors queued."""
    while True:
        async with transaction(factory) as session:
            query = (
                select(Document.id, Document.storage_path, Document.collection_id)
                .where(Document.expires_at.is_not(None), Document.expires_at <= now)
                .order_by(Document.id)
                .limit(batch_size)
            )
            if lock_for_update(session):
                query = query.with_for_update()
            rows = (await session.execute(query)).all()
            if not rows:
                return
            ids = [row.id for row in rows]
            chunks = await session.execute(delete(DocumentChunk).where(DocumentChunk.document_id.in_(ids)))
            await session.execute(delete(IngestionJob).where(IngestionJob.document_id.in_(ids)))
            for row in rows:
                queue_file_and_vector_erasure(session, row.id, row.storage_path)
            documents = await session.execute(delete(Document).where(Document.id.in_(ids)))
            kinds = {"documents": int(documents.rowcount or 0), "chunks": int(chunks.rowcount or 0)}  # type: ignore[attr-defined]
            await append_audit(
                session,
                at=now,
                action="purge.documents",
                context=SYSTEM_CONTEXT,
                object_type="document",
                object_ids=ids,
                detail={
                    "run_id": report.run_id,
                    "policy": "document expiry",
                    "collections": sorted({row.collection_id for row in rows}),
                    "kinds": kinds,
                },
            )
        report.documents["documents"] += kinds["documents"]
        report.documents["chunks"] += kinds["chunks"]
        report.batches += 1


# One whole run ---------------------------------------------------------------------------------------------


async def run_purge(
    factory: async_sessionmaker[AsyncSession],
    store: VectorStore | None,
    settings: Settings,
    *,
    batch_size: int = 50,
    max_batches: int | None = None,
    before_each_delete: BatchHook | None = None,
) -> PurgeReport:
    """Everything the retention purge does, in an order that a re-run after any interruption completes."""
    now = settings.clock.now()
    report = PurgeReport(run_id=uuid.uuid4().hex)
    _add_finished(report.files_and_vectors, await finish_pending_erasures(factory, store, settings.files_path))
    await purge_expired_conversations(
        factory, report, now=now, default_days=settings.default_retention_days, batch_size=batch_size,
        max_batches=max_batches, before_each_delete=before_each_delete,
    )
    if report.complete:
        await stamp_collection_expiries(factory, report)
        await purge_expired_documents(factory, report, now=now, batch_size=batch_size)
    _add_finished(report.files_and_vectors, await finish_pending_erasures(factory, store, settings.files_path))
    if report.complete:
        # Audit records have their own, much longer retention; the conversation purge never touches them.
        async with transaction(factory) as session:
            pruned = await prune_audit(session, before=now - timedelta(days=settings.audit_retention_days), now=now)
            report.audit_pruned = pruned.removed
            report.audit_prune_refused = pruned.refused
        if report.audit_prune_refused:
            log.error("audit_chain_broken_prune_refused", problems=len(report.audit_prune_refused))
    async with transaction(factory) as session:
        await append_audit(
            session, at=now, action="purge.receipt", context=SYSTEM_CONTEXT, object_type="purge",
            object_ids=[report.run_id], detail=report.receipt(),
        )
    totals = {kind: sum(p.kinds[kind] for p in report.policies.values()) for kind in KINDS}
    totals.update(documents=report.documents["documents"], document_chunks=report.documents["chunks"])
    totals.update(files=report.files_and_vectors.files, vectors=report.files_and_vectors.vectors)
    record_purge_receipt(totals)
    log.info(
        "purge_finished",
        conversations=report.conversations,
        documents=report.documents["documents"],
        held_skipped=len(report.held_skipped),
        complete=report.complete,
    )
    return report
