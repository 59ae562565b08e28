"""The SCIM 2.0 endpoint at /scim/v2: bearer-token protected (constant-time compare), SCIM JSON in and out."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from litestar import Controller, Request, Response, Router, delete, get, patch, post, put
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext
from portal.auth import scim_groups, scim_service
from portal.auth.scim_service import ScimChange, ScimError
from portal.auth.services import auth_services
from portal.db.engine import transaction
from portal.runtime import Runtime

SCIM_MEDIA_TYPE = "application/scim+json"


def requires_scim_token(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    token = connection.app.state.settings.scim_token
    if token is None:
        raise PermissionDeniedException("SCIM provisioning is not enabled (set ENCLAVE_SCIM_TOKEN).")
    header = connection.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode()):
        raise NotAuthorizedException("A valid SCIM bearer token is required.")


def _scim(body: dict[str, Any] | None, status: int = 200) -> Response[Any]:
    return Response(body, status_code=status, media_type=SCIM_MEDIA_TYPE)


def _error_response(_request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ScimError):
        return _scim(exc.body(), exc.status)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal error"
    error = ScimError(status, str(detail))
    response = _scim(error.body(), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="enclave-scim"'
    return response


async def _payload(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise ScimError(400, "The body is not valid JSON", "invalidSyntax") from exc
    if not isinstance(body, dict):
        raise ScimError(400, "The body must be a JSON object", "invalidSyntax")
    return body


def _context(request: Request[Any, Any, Any]) -> AuditContext:
    client = request.client.host if request.client else None
    return AuditContext(roles=("scim",), client_addr=client, request_id=request.state.get("request_id"))


def _base_url(runtime: Runtime) -> str:
    return runtime.settings.public_url.rstrip("/") + "/scim/v2"


async def _write(
    request: Request[Any, Any, Any], runtime: Runtime, work: Callable[[AsyncSession], Awaitable[ScimChange]]
) -> ScimChange:
    async with transaction(runtime.db) as session:
        change = await work(session)
    # After the commit: ending sessions writes in its own transaction (and may be Redis).
    services = auth_services(request.app)
    for user_id in change.end_sessions_for:
        await services.sessions.delete_for_user(user_id)
    return change


@dataclass(frozen=True)
class _ScimResourceType:
    """What one SCIM resource type does for each operation: Users and Groups speak the same protocol (RFC 7644)."""

    create: Callable[[AsyncSession, dict[str, Any], datetime, AuditContext, str], Awaitable[ScimChange]]
    query: Callable[[AsyncSession, str | None, int, int, str], Awaitable[dict[str, Any]]]
    get: Callable[[AsyncSession, str, str], Awaitable[dict[str, Any]]]
    replace: Callable[[AsyncSession, str, dict[str, Any], datetime, AuditContext, str], Awaitable[ScimChange]]
    patch: Callable[[AsyncSession, str, dict[str, Any], datetime, AuditContext, str], Awaitable[ScimChange]]
    delete: Callable[[AsyncSession, str, datetime, AuditContext], Awaitable[ScimChange]]


class _ScimResourceController(Controller):
    """The SCIM operations on one resource type; each subclass names its path and its resource type."""

    resource: ClassVar[_ScimResourceType]

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Response[Any]:
        payload, now = await _payload(request), runtime.clock.now()
        change = await _write(request, runtime, lambda s: self.resource.create(s, payload, now, _context(request), _base_url(runtime)))
        return _scim(change.resource, 201)

    @get("/")
    async def query(
        self, runtime: NamedDependency[Runtime], filter: str | None = None, startIndex: int = 1, count: int = 100  # noqa: N803
    ) -> Response[Any]:
        async with runtime.db() as session:
            return _scim(await self.resource.query(session, filter, startIndex, count, _base_url(runtime)))

    @get("/{resource_id:str}")
    async def read(self, runtime: NamedDependency[Runtime], resource_id: str) -> Response[Any]:
        async with runtime.db() as session:
            return _scim(await self.resource.get(session, resource_id, _base_url(runtime)))

    @put("/{resource_id:str}")
    async def replace(
        self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], resource_id: str
    ) -> Response[Any]:
        payload, now = await _payload(request), runtime.clock.now()
        change = await _write(
            request, runtime,
            lambda s: self.resource.replace(s, resource_id, payload, now, _context(request), _base_url(runtime)),
        )
        return _scim(change.resource)

    @patch("/{resource_id:str}")
    async def patch(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], resource_id: str) -> Response[Any]:
        payload, now = await _payload(request), runtime.clock.now()
        change = await _write(
            request, runtime,
            lambda s: self.resource.patch(s, resource_id, payload, now, _context(request), _base_url(runtime)),
        )
        return _scim(change.resource)

    @delete("/{resource_id:str}", status_code=204)
    async def remove(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime], resource_id: str) -> None:
        now = runtime.clock.now()
        await _write(request, runtime, lambda s: self.resource.delete(s, resource_id, now, _context(request)))


class ScimUsersController(_ScimResourceController):
    path = "/Users"
    resource = _ScimResourceType(
        create=scim_service.create_user, query=scim_service.list_users, get=scim_service.get_user,
        replace=scim_service.replace_user, patch=scim_service.patch_user, delete=scim_service.delete_user,
    )


class ScimGroupsController(_ScimResourceController):
    path = "/Groups"
    resource = _ScimResourceType(
        create=scim_groups.create_group, query=scim_groups.list_groups, get=scim_groups.get_group,
        replace=scim_groups.replace_group, patch=scim_groups.patch_group, delete=scim_groups.delete_group,
    )


def scim_router() -> Router:
    return Router(
        path="/scim/v2",
        route_handlers=[ScimUsersController, ScimGroupsController],
        guards=[requires_scim_token],
        exception_handlers={ScimError: _error_response, HTTPException: _error_response},
    )
