"""Reading the audit trail: filters for the admin browser, pages, and streamed CSV / JSONL exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.db.models import AuditEvent

EXPORT_FIELDS = (
    "seq", "at", "user_id", "roles", "session_hash", "client_addr", "action", "object_type", "object_ids",
    "outcome", "request_id", "model", "detail", "prev_hash", "hash",
)
PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilters:
    user_id: str | None = None
    action: str | None = None  # exact, or a prefix ending in "." or "*" ("purge." / "hold*")
    outcome: str | None = None  # allowed | denied
    since: date | None = None  # inclusive, UTC day
    until: date | None = None  # inclusive, UTC day

    @classmethod
    def parse(cls, *, user_id: str = "", action: str = "", outcome: str = "", since: str = "", until: str = "") -> AuditFilters:
        """From form or query strings; raises ValueError with a plain message for a bad date or outcome."""
        if outcome and outcome not in ("allowed", "denied"):
            raise ValueError("Outcome is either 'allowed' or 'denied'.")
        return cls(
            user_id=user_id.strip() or None,
            action=action.strip() or None,
            outcome=outcome or None,
            since=_parse_day(since, "From"),
            until=_parse_day(until, "To"),
        )

    def as_query(self) -> dict[str, str]:
        values = {"user_id": self.user_id, "action": self.action, "outcome": self.outcome,
                  "since": self.since.isoformat() if self.since else None,
                  "until": self.until.isoformat() if self.until else None}
        return {k: v for k, v in values.items() if v}

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        if self.user_id:
            stmt = stmt.where(AuditEvent.user_id == self.user_id)
        if self.action:
            if self.action.endswith(("*", ".")):
                stmt = stmt.where(AuditEvent.action.startswith(self.action.rstrip("*"), autoescape=True))
            else:
                stmt = stmt.where(AuditEvent.action == self.action)
        if self.outcome:
            stmt = stmt.where(AuditEvent.outcome == self.outcome)
        if self.since:
            stmt = stmt.where(AuditEvent.at >= datetime.combine(self.since, time.min, UTC))
        if self.until:
            stmt = stmt.where(AuditEvent.at < datetime.combine(self.until + timedelta(days=1), time.min, UTC))
        return stmt


def _parse_day(value: str, label: str) -> date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{label}: write the date as YYYY-MM-DD.") from None


@dataclass
class AuditPage:
    events: Sequence[AuditEvent]
    page: int
    pages: int
    total: int


async def audit_page(session: AsyncSession, filters: AuditFilters, page: int = 1, per_page: int = PAGE_SIZE) -> AuditPage:
    """Newest first."""
    total = (await session.execute(filters.apply(select(func.count()).select_from(AuditEvent)))).scalar_one()
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    events = (
        (await session.execute(
            filters.apply(select(AuditEvent)).order_by(AuditEvent.seq.desc()).offset((page - 1) * per_page).limit(per_page)
        )).scalars().all()
    )
    return AuditPage(events=events, page=page, pages=pages, total=total)


async def distinct_actions(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(AuditEvent.action).distinct().order_by(AuditEvent.action))).scalars())


def event_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(timespec="microseconds"),
        "user_id": event.user_id,
        "roles": list(event.roles or []),
        "session_hash": event.session_hash,
        "client_addr": event.client_addr,
        "action": event.action,
        "object_type": event.object_type,
        "object_ids": list(event.object_ids or []),
        "outcome": event.outcome,
        "request_id": event.request_id,
        "model": event.model,
        "detail": event.detail or {},
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


async def iter_events(
    factory: async_sessionmaker[AsyncSession], filters: AuditFilters, batch: int = 1000
) -> AsyncIterator[AuditEvent]:
    """Oldest first, in batches of short transactions, so an export of millions of records never holds them all."""
    last = 0
    while True:
        async with factory() as session:
            rows = (
                (await session.execute(
                    filters.apply(select(AuditEvent)).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
                )).scalars().all()
            )
        if not rows:
            return
        for row in rows:
            yield row
        last = rows[-1].seq


async def jsonl_lines(events: AsyncIterator[AuditEvent]) -> AsyncIterator[str]:
    async for event in events:
        yield json.dumps(event_dict(event), ensure_ascii=False, sort_keys=True) + "\n"


async def csv_lines(events: AsyncIterator[AuditEvent]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_FIELDS)
    async for event in events:
        row = event_dict(event)
        writer.writerow(
            [json.dumps(row[f], ensure_ascii=False, sort_keys=True) if isinstance(row[f], list | dict) else row[f]
             for f in EXPORT_FIELDS]
        )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()
