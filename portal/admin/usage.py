"""The usage dashboard's numbers, derived from the audit trail, citations and feedback.

Questions and tokens come from the audit trail (chat.question / chat.answer records), so zero-retention turns
and conversations already purged still count. Neither question nor answer text is read here: negative feedback
is shown with its comment and the documents the answer cited, which is what points at a missing or outdated
document.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.db.models import AuditEvent, Citation, Collection, Document, Feedback, Message
from portal.settings import Settings


@dataclass(frozen=True)
class NegativeFeedback:
    at: datetime
    comment: str
    cited_documents: list[str]


@dataclass
class UsageReport:
    days: list[date]
    roles: list[str]
    questions_by_day_role: dict[str, list[int]]  # role -> count per day
    questions_total: int
    collections: list[tuple[str, int]]  # (collection name, answers citing it), most used first
    negative: list[NegativeFeedback]
    negative_total: int
    input_tokens_by_day: list[int]
    output_tokens_by_day: list[int]
    estimated_cost: float
    currency: str
    price_input: float
    price_output: float
    notes: list[str] = field(default_factory=list)

    @property
    def input_tokens(self) -> int:
        return sum(self.input_tokens_by_day)

    @property
    def output_tokens(self) -> int:
        return sum(self.output_tokens_by_day)


def _day(value: datetime) -> date:
    return value.date()


async def usage_report(session: AsyncSession, settings: Settings, now: datetime, days: int = 30) -> UsageReport:
    start_day = _day(now) - timedelta(days=days - 1)
    start = datetime.combine(start_day, datetime.min.time(), tzinfo=now.tzinfo)
    day_list = [start_day + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}

    by_role: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    questions = 0
    rows = await session.execute(
        select(AuditEvent.at, AuditEvent.roles).where(
            AuditEvent.action == "chat.question", AuditEvent.outcome == "allowed", AuditEvent.at >= start
        )
    )
    for at, roles in rows.all():
        slot = index.get(_day(at))
        if slot is None:
            continue
        questions += 1
        # A person with several roles counts once under each of them: the chart answers "who asks".
        for role in roles or ["(no role)"]:
            by_role[str(role)][slot] += 1

    input_by_day, output_by_day = [0] * days, [0] * days
    rows = await session.execute(
        select(AuditEvent.at, AuditEvent.detail).where(AuditEvent.action == "chat.answer", AuditEvent.at >= start)
    )
    for at, detail in rows.all():
        slot = index.get(_day(at))
        if slot is None:
            continue
        detail = detail or {}
        input_by_day[slot] += int(detail.get("prompt_tokens") or 0)
        output_by_day[slot] += int(detail.get("completion_tokens") or 0)

    usage_rows = await session.execute(
        select(Collection.name, func.count(func.distinct(Citation.message_id)))
        .join(Message, Message.id == Citation.message_id)
        .join(Collection, Collection.id == Citation.collection_id)
        .where(Message.created_at >= start)
        .group_by(Collection.name)
        .order_by(func.count(func.distinct(Citation.message_id)).desc())
        .limit(10)
    )
    collections = [(str(name), int(n)) for name, n in usage_rows.all()]

    negative_rows = (
        await session.execute(
            select(Feedback.message_id, Feedback.created_at, Feedback.comment)
            .where(Feedback.rating < 0, Feedback.created_at >= start)
            .order_by(Feedback.created_at.desc())
        )
    ).all()
    cited: dict[str, list[str]] = defaultdict(list)
    shown = negative_rows[:50]
    if shown:
        cite_rows = await session.execute(
            select(Citation.message_id, Document.title, Document.filename)
            .join(Document, Document.id == Citation.document_id)
            .where(Citation.message_id.in_([r[0] for r in shown]), Citation.cited.is_(True))
            .order_by(Citation.ordinal)
        )
        for message_id, title, filename in cite_rows.all():
            name = title or filename
            if name not in cited[message_id]:
                cited[message_id].append(name)
    negative = [NegativeFeedback(at, comment or "", cited.get(mid, [])) for mid, at, comment in shown]

    cost = (sum(input_by_day) * settings.usage_price_input_per_million
            + sum(output_by_day) * settings.usage_price_output_per_million) / 1_000_000
    roles = sorted(by_role, key=lambda r: (-sum(by_role[r]), r))
    return UsageReport(
        days=day_list, roles=roles, questions_by_day_role={r: by_role[r] for r in roles}, questions_total=questions,
        collections=collections, negative=negative, negative_total=len(negative_rows),
        input_tokens_by_day=input_by_day, output_tokens_by_day=output_by_day, estimated_cost=cost,
        currency=settings.usage_price_currency, price_input=settings.usage_price_input_per_million,
        price_output=settings.usage_price_output_per_million,
    )


def top_documents_of_negative(report: UsageReport) -> list[tuple[str, int]]:
    counter: Counter[str] = Counter()
    for item in report.negative:
        counter.update(item.cited_documents)
    return counter.most_common(10)


def as_json(report: UsageReport) -> dict[str, Any]:
    return {
        "days": [d.isoformat() for d in report.days],
        "questions_by_role": report.questions_by_day_role,
        "questions_total": report.questions_total,
        "collections": [{"name": n, "answers": c} for n, c in report.collections],
        "negative_feedback": report.negative_total,
        "input_tokens": report.input_tokens,
        "output_tokens": report.output_tokens,
        "estimated_cost": round(report.estimated_cost, 4),
        "currency": report.currency,
    }
