"""A person's own side: their data page (retention period, export button) and break-glass notices."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Response, Template
from litestar.types import ASGIApp, Receive, Scope, Send

from portal.access import require_principal, requires_login
from portal.db.engine import transaction
from portal.governance import breakglass
from portal.governance.records import build_records_export
from portal.governance.retention import retention_decision
from portal.governance.web_admin import zip_response
from portal.logging import get_logger
from portal.principal import Principal
from portal.runtime import Runtime
from portal.web.context import audit_context

log = get_logger(__name__)


class MyDataController(Controller):
    path = "/me"
    guards = [requires_login]

    @get("/data", name="me:data")
    async def data(self, request: Request, runtime: NamedDependency[Runtime]) -> Template:
        principal = require_principal(request)
        async with runtime.db() as session:
            decision = await retention_decision(session, principal.roles,
                                                default_days=runtime.settings.default_retention_days)
        return Template(template_name="governance/me_data.html.j2", context={"retention": decision})

    @post("/export", name="me:export", status_code=200)
    async def export(self, request: Request, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        principal = require_principal(request)
        async with transaction(runtime.db) as session:
            export = await build_records_export(session, user_id=principal.user_id, actor=audit_context(request),
                                                now=runtime.clock.now(), requested_by="self")
        return zip_response(export.filename, export.content)

    @post("/notices/{notice_id:str}/seen", name="me:notice_seen")
    async def notice_seen(self, request: Request, notice_id: str, runtime: NamedDependency[Runtime]) -> Redirect:
        principal = require_principal(request)
        async with transaction(runtime.db) as session:
            await breakglass.acknowledge_notice(session, notice_id=notice_id, user_id=principal.user_id,
                                                now=runtime.clock.now())
        return Redirect(request.headers.get("referer") or "/", status_code=303)


def access_notice_middleware(app: ASGIApp) -> ASGIApp:
    """For signed-in people's page views, put their unacknowledged break-glass notices on request.state, where
    templates/governance/_notices.html.j2 (included by base.html.j2) shows them."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET":
            state = scope.setdefault("state", {})
            principal = state.get("principal")
            accept = dict(scope.get("headers", [])).get(b"accept", b"")
            if isinstance(principal, Principal) and b"text/html" in accept:
                runtime: Runtime = scope["app"].state.runtime
                if runtime.settings.break_glass_notices:
                    try:
                        async with runtime.db() as session:
                            state["access_notices"] = await breakglass.pending_notices(session, principal.user_id)
                    except Exception as exc:  # noqa: BLE001 - a page still renders; the notice shows next time
                        log.warning("access_notices_unavailable", error=type(exc).__name__)
        await app(scope, receive, send)

    return middleware
