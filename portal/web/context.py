"""Per-request facts other layers need (the audit context), taken from the server session and the connection."""

from __future__ import annotations

from litestar.connection import ASGIConnection

from portal.access import principal_of
from portal.audit import AuditContext


def audit_context(connection: ASGIConnection) -> AuditContext:
    principal = principal_of(connection)
    client = connection.client.host if connection.client else None
    request_id = connection.state.get("request_id")
    if principal is None:
        return AuditContext(client_addr=client, request_id=request_id)
    return AuditContext(
        user_id=principal.user_id,
        roles=tuple(sorted(principal.roles)),
        session_hash=principal.session_hash,
        client_addr=client,
        request_id=request_id,
    )
