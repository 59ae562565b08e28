"""Governance: retention per role, purges, legal hold, the audit trail's views, records requests and break-glass."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.types import ControllerRouterHandler, Middleware

from portal.settings import Settings


def register(settings: Settings) -> tuple[Sequence[ControllerRouterHandler], Sequence[Middleware]]:
    from portal.governance.web_admin import GovernanceAdminController
    from portal.governance.web_audit import AuditController
    from portal.governance.web_me import MyDataController, access_notice_middleware

    # The notice middleware runs inside the session middleware (registered by auth before us): it needs the principal.
    return [GovernanceAdminController, AuditController, MyDataController], [access_notice_middleware]
