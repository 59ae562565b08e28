"""The audit trail in the portal (admins only): browse and filter, page through, export as CSV or JSONL, verify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException
from litestar.response import Response, Stream, Template

from portal.access import requires_admin
from portal.audit import append_audit, verify_chain
from portal.db.engine import transaction
from portal.governance.audit_trail import (
    AuditFilters,
    audit_page,
    csv_lines,
    distinct_actions,
    iter_events,
    jsonl_lines,
)
from portal.runtime import Runtime
from portal.web.context import audit_context

PAGE = "governance/audit.html.j2"


def _filters(request: Request) -> AuditFilters:
    params = request.query_params
    try:
        return AuditFilters.parse(
            user_id=params.get("user_id", ""), action=params.get("action", ""), outcome=params.get("outcome", ""),
            since=params.get("since", ""), until=params.get("until", ""),
        )
    except ValueError as exc:
        raise ClientException(str(exc)) from None


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def render_block(request: Request, block: str, context: dict[str, Any]) -> str:
    environment: Environment = request.app.template_engine.engine  # type: ignore[union-attr]
    template = environment.get_template(PAGE)
    return "".join(template.blocks[block](template.new_context({"request": request, **context})))


class AuditController(Controller):
    path = "/governance/audit"
    guards = [requires_admin]

    @get("/", name="governance:audit")
    async def browse(self, request: Request, runtime: NamedDependency[Runtime]) -> Any:
        filters = _filters(request)
        async with runtime.db() as session:
            page = await audit_page(session, filters, _page_number(request))
            actions = await distinct_actions(session)
        query = filters.as_query()
        context = {
            "filters": filters, "page": page, "actions": actions, "query": urlencode(query),
            "page_url": lambda n: "?" + urlencode({**query, "page": n}),
        }
        if request.headers.get("hx-request") == "true":
            return Response(render_block(request, "results", context), media_type="text/html")
        return Template(template_name=PAGE, context=context)

    @get("/export", name="governance:audit_export")
    async def export(self, request: Request, runtime: NamedDependency[Runtime]) -> Stream:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            raise ClientException("Export as csv or jsonl.")
        filters = _filters(request)
        # The export is itself audited, before the first byte leaves.
        async with transaction(runtime.db) as session:
            await append_audit(
                session, at=runtime.clock.now(), action="audit.exported", context=audit_context(request),
                object_type="audit", detail={"format": fmt, "filters": filters.as_query(), "via": "portal"},
            )
        lines = (csv_lines if fmt == "csv" else jsonl_lines)(iter_events(runtime.db, filters))

        async def body() -> AsyncIterator[bytes]:
            async for line in lines:
                yield line.encode()

        stamp = runtime.clock.now().strftime("%Y%m%d-%H%M%S")
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return Stream(body(), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="enclave-audit-{stamp}.{fmt}"', "Cache-Control": "no-store"})

    @post("/verify", name="governance:audit_verify", status_code=200)
    async def verify(self, request: Request, runtime: NamedDependency[Runtime]) -> Template:
        async with runtime.db() as session:
            report = await verify_chain(session)
        return Template(template_name="governance/audit_verify.html.j2", context={"report": report})
