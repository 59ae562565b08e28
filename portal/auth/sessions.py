"""Server-side sessions: start one at login (a fresh id every time), resolve a cookie to a Principal with the
idle and absolute limits checked on the app clock, and end one or all of a person's sessions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext, append_audit
from portal.auth.services import AuthServices
from portal.auth.session_store import SessionRecord, hash_session_id
from portal.clock import Clock
from portal.db.engine import transaction
from portal.db.models import User
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

    async with db() as session:
        user = await session.get(User, record.user_id)
        roles = frozenset(a.role for a in user.roles) if user is not None else frozenset()
        active = user is not None and user.status == "active"
        display_name = user.display_name if user else ""
        email = user.email if user else None
    if not active:
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
        display_name=display_name,
        email=email,
        roles=roles,
        session_hash=id_hash,
        provider=record.provider,
    )
    return Resolution(principal, record, clear_cookie=False)


async def end_session(services: AuthServices, id_hash: str) -> None:
    await services.sessions.delete(id_hash)


async def end_user_sessions(services: AuthServices, user_id: str) -> int:
    return await services.sessions.delete_for_user(user_id)
