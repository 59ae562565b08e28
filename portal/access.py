"""The one place that decides what a person may read and manage.

The same functions build the route guards, the vector-store filter for retrieval and the citation re-check
at render time. Everything is derived from the server-side Principal (the session), never from the request.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard
from sqlalchemy import BindParameter, CompoundSelect, bindparam, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from portal.db.engine import on_async_session
from portal.db.models import Collection, CollectionAccess, CollectionManager, Document
from portal.db.tables import COLLECTION_ACCESS, DOCUMENTS
from portal.principal import Principal
from rag.types import AccessFilter

ADMIN_ROLE = "admin"


def _readable_and_expired() -> CompoundSelect:
    """The retrieval filter's one query: the collections the roles may read, and the expired documents in them
    (built once, on table columns: see portal.db.tables)."""
    grants, documents = COLLECTION_ACCESS.c, DOCUMENTS.c
    roles: BindParameter[str] = bindparam("filter_roles", expanding=True)
    return union_all(
        select(literal("collection").label("kind"), grants.collection_id.label("id")).where(grants.role.in_(roles)),
        select(literal("expired").label("kind"), documents.id.label("id")).where(
            documents.collection_id.in_(select(grants.collection_id).where(grants.role.in_(roles))),
            documents.expires_at.is_not(None), documents.expires_at <= bindparam("filter_now"),
        ),
    )


_READABLE_AND_EXPIRED = _readable_and_expired()


# Who the request is ---------------------------------------------------------------------------------------


def principal_of(connection: ASGIConnection) -> Principal | None:
    """The signed-in person, as the session middleware put them on the request (None when signed out)."""
    principal = connection.state.get("principal")
    return principal if isinstance(principal, Principal) else None


def require_principal(connection: ASGIConnection) -> Principal:
    principal = principal_of(connection)
    if principal is None:
        raise NotAuthorizedException("Please sign in to continue.")
    return principal


# Guards (Litestar guard signature: (connection, handler) -> None) ---------------------------------------


def requires_login(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    require_principal(connection)


def requires_role(*roles: str) -> Guard:
    """A guard that lets in anyone holding at least one of `roles` (admins always)."""
    wanted = frozenset(roles)

    def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        principal = require_principal(connection)
        if not (principal.roles & wanted or ADMIN_ROLE in principal.roles):
            raise PermissionDeniedException("Your role does not give access to this page.")

    guard.__name__ = f"requires_role_{'_'.join(sorted(wanted))}"
    return guard


def requires_admin(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    if ADMIN_ROLE not in require_principal(connection).roles:
        raise PermissionDeniedException("Only administrators may do this.")


def requires_collection_manager(path_param: str = "collection_id") -> Guard:
    """A guard for routes about one collection (named by `path_param`): admins and that collection's managers."""

    async def guard(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
        principal = require_principal(connection)
        collection_id = str(connection.path_params.get(path_param, ""))
        async with connection.app.state.runtime.db() as session:
            allowed = await can_manage_collection(session, principal, collection_id)
        if not allowed:
            raise PermissionDeniedException("Only this collection's managers may do this.")

    guard.__name__ = f"requires_collection_manager_{path_param}"
    return guard


# What they may read ---------------------------------------------------------------------------------------


async def readable_collection_ids(session: AsyncSession, roles: Iterable[str]) -> frozenset[str]:
    """Collections any of these roles may read. No roles: nothing."""
    role_list = sorted(set(roles))
    if not role_list:
        return frozenset()
    rows = await session.execute(
        select(CollectionAccess.collection_id).where(CollectionAccess.role.in_(role_list)).distinct()
    )
    return frozenset(rows.scalars())


async def expired_document_ids(session: AsyncSession, collection_ids: Iterable[str], now: datetime) -> frozenset[str]:
    ids = list(collection_ids)
    if not ids:
        return frozenset()
    rows = await session.execute(
        select(Document.id).where(
            Document.collection_id.in_(ids), Document.expires_at.is_not(None), Document.expires_at <= now
        )
    )
    return frozenset(rows.scalars())


def retrieval_filter_in_unit(session: Session, principal: Principal, now: datetime) -> AccessFilter:
    """The vector-store filter for this person's searches: their readable collections, minus expired documents.

    One round trip (it runs for every question): the readable collections, and the expired documents in them."""
    role_list = sorted(set(principal.roles))
    if not role_list:
        return AccessFilter(collection_ids=frozenset(), excluded_document_ids=frozenset())
    rows = session.execute(_READABLE_AND_EXPIRED, {"filter_roles": role_list, "filter_now": now})
    found: dict[str, set[str]] = {"collection": set(), "expired": set()}
    for kind, item_id in rows.tuples():
        found[kind].add(item_id)
    return AccessFilter(collection_ids=frozenset(found["collection"]), excluded_document_ids=frozenset(found["expired"]))


retrieval_filter = on_async_session(retrieval_filter_in_unit)


async def can_read_document(session: AsyncSession, principal: Principal, document_id: str, now: datetime) -> bool:
    """The render-time re-check for a citation or passage view."""
    document = await session.get(Document, document_id)
    if document is None:
        return False
    if document.expires_at is not None and document.expires_at <= now:
        return False
    return document.collection_id in await readable_collection_ids(session, principal.roles)


async def can_manage_collection(session: AsyncSession, principal: Principal, collection_id: str) -> bool:
    """Admins manage every collection; a collection's managers (by role or by person) manage only that one."""
    if ADMIN_ROLE in principal.roles:
        return True
    conditions = [CollectionManager.user_id == principal.user_id]
    if principal.roles:
        conditions.append(CollectionManager.role.in_(sorted(principal.roles)))
    row = await session.execute(
        select(CollectionManager.id).where(CollectionManager.collection_id == collection_id, or_(*conditions)).limit(1)
    )
    return row.first() is not None


async def managed_collection_ids(session: AsyncSession, principal: Principal) -> frozenset[str]:
    if ADMIN_ROLE in principal.roles:
        return frozenset((await session.execute(select(Collection.id))).scalars())
    conditions = [CollectionManager.user_id == principal.user_id]
    if principal.roles:
        conditions.append(CollectionManager.role.in_(sorted(principal.roles)))
    rows = await session.execute(select(CollectionManager.collection_id).where(or_(*conditions)).distinct())
    return frozenset(rows.scalars())
