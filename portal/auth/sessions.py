"""Server-side sessions: start one at login (a fresh id every time), resolve a cookie to a Principal with the
idle and absolute limits checked on the app clock, and end one or all of a person's sessions.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from portal.audit import AuditContext, append_audit
from portal.auth.services import AuthServices
from portal.auth.session_store import (
    SESSION_COLUMNS,
    DatabaseSessionStore,
    SessionRecord,
    hash_session_id,
    record_from_row,
)
from portal.clock import Clock
from portal.db.engine import run_unit, transaction
from portal.db.tables import ROLE_ASSIGNMENTS, USER_SESSIONS, USERS
from portal.principal import Principal

# Writing last_seen on every request would serialise SQLite writers; a minute of idle precision is plenty.
TOUCH_INTERVAL = timedelta(seconds=60)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


async def start_session(
    services: AuthServices, *, session_id: str, user_id: str, provider: str, now: datetime, data: dict[str, Any]
) -> SessionRecord:
    record = SessionRecord(
        id_hash=hash_session_id(session_id),
        user_id=user_id,
        provider=provider,
        created_at=now,
        last_seen_at=now,
        absolute_expires_at=now + services.absolute_lifetime,
        data=data,
    )
    await services.sessions.create(record)
    return record


@dataclass(frozen=True)
class _UserFacts:
    active: bool
    display_name: str
    email: str | None
    roles: frozenset[str]


# Table columns (see SESSION_COLUMNS): this runs on every signed-in request.
_FACT_COLUMNS = (USERS.c.display_name, USERS.c.email, USERS.c.status, ROLE_ASSIGNMENTS.c.role)


def _facts_from_rows(rows: Sequence[Any]) -> _UserFacts:
    """A row per role (one row with a NULL role for a person without roles); no rows: no such person."""
    if not rows or rows[0].status is None:
        return _UserFacts(False, "", None, frozenset())
    first = rows[0]
    roles = frozenset(row.role for row in rows if row.role is not None)
    return _UserFacts(first.status == "active", first.display_name, first.email, roles)


# Built once (see portal.db.tables): every signed-in request runs the second.
_USER_FACTS = (
    select(*_FACT_COLUMNS)
    .select_from(USERS.outerjoin(ROLE_ASSIGNMENTS, ROLE_ASSIGNMENTS.c.user_id == USERS.c.id))
    .where(USERS.c.id == bindparam("facts_user_id"))
)
_SESSION_AND_FACTS = (
    select(*SESSION_COLUMNS, *_FACT_COLUMNS)
    .select_from(USER_SESSIONS.outerjoin(USERS, USERS.c.id == USER_SESSIONS.c.user_id)
                 .outerjoin(ROLE_ASSIGNMENTS, ROLE_ASSIGNMENTS.c.user_id == USERS.c.id))
    .where(USER_SESSIONS.c.id_hash == bindparam("session_id_hash"))
)


async def _user_facts(session: AsyncSession, user_id: str) -> _UserFacts:
    # One plain-column query (a row per role), not ORM objects: this runs on every signed-in request.
    rows = (await session.execute(_USER_FACTS, {"facts_user_id": user_id})).all()
    return _facts_from_rows(rows)


def _session_and_facts(session: Session, id_hash: str) -> tuple[SessionRecord | None, _UserFacts | None]:
    """The session row and its person in one query (every signed-in request pays for this)."""
    rows = session.execute(_SESSION_AND_FACTS, {"session_id_hash": id_hash}).all()
    record = record_from_row(rows[0]) if rows else None
    if record is None:
        return None, None
    return record, _facts_from_rows(rows)


@dataclass(frozen=True)
class Resolution:
    principal: Principal | None
    record: SessionRecord | None
    clear_cookie: bool


async def resolve_session(
    services: AuthServices,
    db: async_sessionmaker[AsyncSession],
    clock: Clock,
    session_id: str,
    context: AuditContext,
) -> Resolution:
    """The Principal behind a session cookie, or None (and the cookie cleared) when the session is over."""
    id_hash = hash_session_id(session_id)
    facts: _UserFacts | None = None
    if isinstance(services.sessions, DatabaseSessionStore):
        record, facts = await run_unit(db, lambda session: _session_and_facts(session, id_hash), write=False)
    else:
        record = await services.sessions.get(id_hash)
    if record is None:
        return Resolution(None, None, clear_cookie=True)
    now = clock.now()
    ended_context = AuditContext(
        user_id=record.user_id, session_hash=id_hash, client_addr=context.client_addr, request_id=context.request_id
    )
    expired = None
    if now >= record.absolute_expires_at:
        expired = "absolute_lifetime"
    elif now - record.last_seen_at > services.idle_timeout:
        expired = "idle_timeout"
    if expired:
        await services.sessions.delete(id_hash)
        async with transaction(db) as session:
            await append_audit(
                session, at=now, action="auth.session_expired", context=ended_context, object_type="session",
                object_ids=[id_hash], detail={"reason": expired},
            )
        return Resolution(None, None, clear_cookie=True)

    if facts is None:
        async with db() as session:
            facts = await _user_facts(session, record.user_id)
    if not facts.active:
        ended = await services.sessions.delete_for_user(record.user_id)
        async with transaction(db) as session:
            await append_audit(
                session, at=now, action="auth.session_ended", context=ended_context, object_type="user",
                object_ids=[record.user_id], outcome="denied",
                detail={"reason": "user_deactivated", "sessions_ended": ended},
            )
        return Resolution(None, None, clear_cookie=True)

    if now - record.last_seen_at >= TOUCH_INTERVAL:
        await services.sessions.touch(id_hash, now)
    principal = Principal(
        user_id=record.user_id,
        display_name=facts.display_name,
        email=facts.email,
        roles=facts.roles,
        session_hash=id_hash,
        provider=record.provider,
    )
    return Resolution(principal, record, clear_cookie=False)


async def end_session(services: AuthServices, id_hash: str) -> None:
    await services.sessions.delete(id_hash)


async def end_user_sessions(services: AuthServices, user_id: str) -> int:
    return await services.sessions.delete_for_user(user_id)
