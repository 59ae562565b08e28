"""The usage dashboard: questions per day by role, most-used collections, negative feedback, tokens and cost."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from markupsafe import Markup

from portal.access import requires_admin
from portal.admin import charts
from portal.admin.usage import as_json, top_documents_of_negative, usage_report
from portal.admin.web import AnyRequest, page, wants_json
from portal.runtime import Runtime

PERIODS = (7, 30, 90)


class UsageController(Controller):
    path = "/admin/usage"
    guards = [requires_admin]

    @get("/", name="admin:usage")
    async def dashboard(self, request: AnyRequest, runtime: NamedDependency[Runtime], days: int = 30) -> Any:
        days = days if days in PERIODS else 30
        async with runtime.db() as session:
            report = await usage_report(session, runtime.settings, runtime.clock.now(), days)
        if wants_json(request):
            return Response(as_json(report))
        labels = [d.strftime("%d %b") for d in report.days]
        questions_chart = charts.stacked_bars(
            "questions-chart", f"Questions per day by role, last {days} days",
            f"{report.questions_total} questions in total; the table below lists the numbers per day.",
            labels, [charts.Series(role, report.questions_by_day_role[role]) for role in report.roles],
        )
        tokens_chart = charts.stacked_bars(
            "tokens-chart", f"LLM tokens per day, last {days} days",
            f"{report.input_tokens} prompt tokens and {report.output_tokens} answer tokens in total.",
            labels, [charts.Series("prompt (input)", report.input_tokens_by_day),
                     charts.Series("answer (output)", report.output_tokens_by_day)],
        )
        collections_chart = charts.horizontal_bars(
            "collections-chart", "Most-used collections", "Answers that cited each collection in the period.",
            report.collections,
        )
        return page("admin/usage.html.j2", {
            "report": report, "days": days, "periods": PERIODS,
            "questions_chart": Markup(questions_chart),  # noqa: S704 - built by charts.py, every label escaped there
            "tokens_chart": Markup(tokens_chart),  # noqa: S704
            "collections_chart": Markup(collections_chart),  # noqa: S704
            "negative_documents": top_documents_of_negative(report),
        })
