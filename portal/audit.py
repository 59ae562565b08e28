"""The hash-chained, append-only audit trail: appending records and verifying the chain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from portal.db.engine import on_async_session
from portal.db.models import AuditChainHead, AuditEvent
from portal.db.tables import AUDIT_CHAIN_HEAD, AUDIT_EVENTS

GENESIS_HASH = "0" * 64
CHAIN_ID = 1


@dataclass(frozen=True)
class AuditContext:
    """Who did something, from where: taken from the request and session, never from form fields."""

    user_id: str | None = None
    roles: tuple[str, ...] = ()
    session_hash: str | None = None
    client_addr: str | None = None
    request_id: str | None = None


SYSTEM_CONTEXT = AuditContext(user_id=None, roles=("system",))


def record_hash(
    *,
    seq: int,
    at: datetime,
    user_id: str | None,
    roles: Sequence[str],
    session_hash: str | None,
    client_addr: str | None,
    action: str,
    object_type: str | None,
    object_ids: Sequence[str],
    outcome: str,
    request_id: str | None,
    model: str | None,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    payload = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "user_id": user_id,
        "roles": list(roles),
        "session_hash": session_hash,
        "client_addr": client_addr,
        "action": action,
        "object_type": object_type,
        "object_ids": list(object_ids),
        "outcome": outcome,
        "request_id": request_id,
        "model": model,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def hash_of_event(event: AuditEvent) -> str:
    return record_hash(
        seq=event.seq,
        at=event.at,
        user_id=event.user_id,
        roles=event.roles or [],
        session_hash=event.session_hash,
        client_addr=event.client_addr,
        action=event.action,
        object_type=event.object_type,
        object_ids=event.object_ids or [],
        outcome=event.outcome,
        request_id=event.request_id,
        model=event.model,
        detail=event.detail or {},
        prev_hash=event.prev_hash,
    )


def _lock_head_sync(session: Session) -> AuditChainHead:
    stmt = select(AuditChainHead).where(AuditChainHead.id == CHAIN_ID)
    if session.bind is not None and session.bind.dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    head = session.execute(stmt).scalar_one_or_none()
    if head is None:
        head = AuditChainHead(id=CHAIN_ID, last_seq=0, last_hash=GENESIS_HASH, anchor_seq=0, anchor_hash=GENESIS_HASH)
        session.add(head)
        session.flush()
    return head


_lock_head = on_async_session(_lock_head_sync)


# Built once, on table columns (see portal.db.tables): every question appends a record.
_READ_HEAD = (select(AUDIT_CHAIN_HEAD.c.last_seq, AUDIT_CHAIN_HEAD.c.last_hash)
              .where(AUDIT_CHAIN_HEAD.c.id == CHAIN_ID))
_LOCK_HEAD = _READ_HEAD.with_for_update()
_INSERT_EVENT = insert(AUDIT_EVENTS)
_MOVE_HEAD = (update(AUDIT_CHAIN_HEAD).where(AUDIT_CHAIN_HEAD.c.id == CHAIN_ID)
              .values(last_seq=bindparam("new_last_seq"), last_hash=bindparam("new_last_hash")))


def _head_row_sync(session: Session) -> tuple[int, str]:
    """The chain head's last seq and hash, the row locked for this transaction (created when missing)."""
    locks = session.bind is not None and session.bind.dialect.name != "sqlite"
    row = session.execute(_LOCK_HEAD if locks else _READ_HEAD).one_or_none()
    if row is None:
        _lock_head_sync(session)
        return 0, GENESIS_HASH
    return int(row.last_seq), str(row.last_hash)


def append_audit_sync(
    session: Session,
    *,
    at: datetime,
    action: str,
    context: AuditContext = SYSTEM_CONTEXT,
    object_type: str | None = None,
    object_ids: Iterable[str] = (),
    outcome: str = "allowed",
    model: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one record inside the caller's transaction, so the record commits (or not) with the action.

    The chain head row is locked (FOR UPDATE on PostgreSQL; SQLite serialises writers) so appends from
    several portal processes form one chain. `append_audit` is the same for an async session. Written as three
    plain statements (read the head, insert the record, move the head): on the chat's path the ORM's unit of work
    for the same rows cost about as much again.
    """
    session.flush()  # the caller's own changes first, as an ORM append did (a no-op when none are pending)
    last_seq, last_hash = _head_row_sync(session)
    record: dict[str, Any] = {
        "seq": last_seq + 1,
        "at": at,
        "user_id": context.user_id,
        "roles": list(context.roles),
        "session_hash": context.session_hash,
        "client_addr": context.client_addr,
        "action": action,
        "object_type": object_type,
        "object_ids": [str(i) for i in object_ids],
        "outcome": outcome,
        "request_id": context.request_id,
        "model": model,
        "detail": detail or {},
        "prev_hash": last_hash,
    }
    record["hash"] = digest = record_hash(**record)
    session.execute(_INSERT_EVENT, record)
    session.execute(_MOVE_HEAD, {"new_last_seq": record["seq"], "new_last_hash": digest})


append_audit = on_async_session(append_audit_sync)


@dataclass
class ChainReport:
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def _events_in_order(session: AsyncSession, batch: int = 500) -> AsyncIterator[AuditEvent]:
    last = -1
    while True:
        rows = (
            (await session.execute(select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)))
            .scalars()
            .all()
        )
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].seq


async def verify_chain(session: AsyncSession) -> ChainReport:
    """Walk the chain and name every modified, deleted, inserted or reordered record. Never repairs anything."""
    report = ChainReport()
    head = (await session.execute(select(AuditChainHead).where(AuditChainHead.id == CHAIN_ID))).scalar_one_or_none()
    expected_prev = head.anchor_hash if head else GENESIS_HASH
    expected_seq = (head.anchor_seq if head else 0) + 1
    async for event in _events_in_order(session):
        report.checked += 1
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                report.problems.append(f"records {expected_seq}..{event.seq - 1} are missing (deleted) before record {event.seq}")
            else:
                report.problems.append(f"record {event.seq} is out of place (expected {expected_seq})")
        if event.prev_hash != expected_prev:
            report.problems.append(f"record {event.seq}: link to the previous record is broken (inserted, deleted or reordered)")
        actual = hash_of_event(event)
        if actual != event.hash:
            report.problems.append(f"record {event.seq}: content was modified (hash mismatch)")
        expected_prev = event.hash
        expected_seq = event.seq + 1
    if head is not None:
        if head.last_seq != expected_seq - 1 or head.last_hash != expected_prev:
            report.problems.append(
                f"chain head says the last record is {head.last_seq}, but the table ends at {expected_seq - 1}: "
                "records at the end were deleted or added outside Enclave"
            )
    return report


# Audit retention -------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    removed: int = 0
    anchor_seq: int = 0
    refused: list[str] = field(default_factory=list)


async def prune_audit(session: AsyncSession, *, before: datetime, now: datetime, batch: int = 5000) -> PruneResult:
    """Remove the oldest records, all older than `before`, and move the chain's anchor past them.

    Only a contiguous run from the start of the chain goes, so `verify_chain` still checks everything left.
    A chain that does not verify is left alone (pruning would hide the evidence) and the refusal returned.
    When even the oldest record is younger than `before` there is nothing to remove and the chain is not walked:
    the scheduled purge asks every hour, and walking years of records each time is minutes of a portal process's
    event loop spent on nothing (`enclave audit verify` and the audit page check the whole chain on demand).
    """
    oldest = (await session.execute(select(AuditEvent.at).order_by(AuditEvent.seq).limit(1))).scalar_one_or_none()
    if oldest is None or oldest >= before:
        anchor_seq = await session.scalar(select(AuditChainHead.anchor_seq).where(AuditChainHead.id == CHAIN_ID))
        return PruneResult(anchor_seq=anchor_seq or 0)
    report = await verify_chain(session)
    if not report.ok:
        return PruneResult(refused=report.problems)
    head = await _lock_head(session)
    first_kept = (
        await session.execute(select(func.min(AuditEvent.seq)).where(AuditEvent.at >= before))
    ).scalar_one_or_none()
    last_to_remove = (first_kept - 1) if first_kept is not None else head.last_seq
    if last_to_remove <= head.anchor_seq:
        return PruneResult(anchor_seq=head.anchor_seq)
    anchor = (await session.execute(select(AuditEvent).where(AuditEvent.seq == last_to_remove))).scalar_one()
    anchor_hash = anchor.hash
    removed = 0
    low = head.anchor_seq
    while low < last_to_remove:
        high = min(low + batch, last_to_remove)
        result = await session.execute(delete(AuditEvent).where(AuditEvent.seq > low, AuditEvent.seq <= high))
        removed += int(getattr(result, "rowcount", 0) or 0)
        low = high
    head.anchor_seq = last_to_remove
    head.anchor_hash = anchor_hash
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="audit.pruned",
        object_type="audit",
        detail={"removed": removed, "anchor_seq": last_to_remove, "older_than": before.isoformat()},
    )
    return PruneResult(removed=removed, anchor_seq=last_to_remove)
