"""The sign-in flow: begin (state, nonce and PKCE verifier stored server-side, single use) and finish (check the
state, exchange the code, verify the ID token, map roles, start a fresh session), auditing every failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext, append_audit
from portal.auth.oidc import OIDCError, new_login_secrets
from portal.auth.services import AuthServices
from portal.auth.session_store import hash_session_id
from portal.auth.sessions import new_session_id, start_session
from portal.auth.users import LoginOutcome, sign_in_user
from portal.clock import Clock
from portal.db.engine import transaction

LOGIN_STATE_TTL = timedelta(minutes=10)


class LoginFailed(Exception):
    """The sign-in could not complete; `status` and `message` are what the person sees, `reason` is audited."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class LoginStart:
    authorization_url: str
    browser_binding: str  # goes into a short-lived cookie: the callback must come back to the same browser


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    session_id: str | None  # None when refused


def safe_return_path(value: str | None) -> str:
    """Only local paths: an open redirect after sign-in would hand people to anyone's site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value[:500]


def _state_key(state: str) -> str:
    return "oidc-login:" + hashlib.sha256(state.encode()).hexdigest()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def begin_login(services: AuthServices, provider_name: str, return_path: str | None) -> LoginStart:
    provider = services.providers.get(provider_name)
    if provider is None:
        raise LoginFailed(404, "unknown_provider", "There is no such sign-in service.")
    state, nonce, verifier = new_login_secrets()
    binding = secrets.token_urlsafe(24)
    try:
        url = await provider.authorization_url(state=state, nonce=nonce, code_verifier=verifier)
    except OIDCError as exc:
        raise LoginFailed(503, exc.reason, exc.message) from exc
    record = {
        "provider": provider_name,
        "nonce": nonce,
        "code_verifier": verifier,
        "return_path": safe_return_path(return_path),
        "binding": _digest(binding),
    }
    await services.login_state.put(_state_key(state), json.dumps(record).encode(), LOGIN_STATE_TTL)
    return LoginStart(authorization_url=url, browser_binding=binding)


async def audit_login_failure(
    db: async_sessionmaker[AsyncSession], clock: Clock, context: AuditContext, provider_name: str, reason: str
) -> None:
    async with transaction(db) as session:
        await append_audit(
            session, at=clock.now(), action="auth.login_failed", context=context, object_type="provider",
            object_ids=[provider_name[:40]], outcome="denied", detail={"reason": reason},
        )


async def finish_login(
    services: AuthServices,
    db: async_sessionmaker[AsyncSession],
    clock: Clock,
    *,
    provider_name: str,
    params: dict[str, str],
    browser_binding: str | None,
    context: AuditContext,
) -> tuple[LoginResult, str]:
    """Returns the result and the path to go back to. Raises LoginFailed (already audited) on any bad input."""
    try:
        return await _finish(services, db, clock, provider_name, params, browser_binding, context)
    except LoginFailed as exc:
        await audit_login_failure(db, clock, context, provider_name, exc.reason)
        raise


async def _finish(
    services: AuthServices,
    db: async_sessionmaker[AsyncSession],
    clock: Clock,
    provider_name: str,
    params: dict[str, str],
    browser_binding: str | None,
    context: AuditContext,
) -> tuple[LoginResult, str]:
    provider = services.providers.get(provider_name)
    if provider is None:
        raise LoginFailed(404, "unknown_provider", "There is no such sign-in service.")
    state = params.get("state")
    if params.get("error") and not state:
        # Some providers drop `state` when the person declines; say what happened rather than "incomplete".
        raise LoginFailed(403, "provider_refused", "The sign-in service did not sign you in.")
    if not state:
        raise LoginFailed(400, "missing_state", "This sign-in link is incomplete. Please start signing in again.")
    raw = await services.login_state.take(_state_key(state))
    if raw is None:
        raise LoginFailed(
            400, "unknown_state", "This sign-in has expired or was already used. Please start signing in again."
        )
    record: dict[str, Any] = json.loads(raw)
    if record.get("provider") != provider_name:
        raise LoginFailed(400, "provider_mismatch", "This sign-in came back from the wrong service. Please start again.")
    if not browser_binding or not hmac.compare_digest(_digest(browser_binding), str(record.get("binding"))):
        raise LoginFailed(
            400, "browser_mismatch", "This sign-in was started in another browser. Please start signing in again."
        )
    if params.get("error"):
        raise LoginFailed(403, "provider_refused", "The sign-in service did not sign you in.")
    code = params.get("code")
    if not code:
        raise LoginFailed(400, "missing_code", "This sign-in link is incomplete. Please start signing in again.")
    try:
        token = await provider.exchange_code(code=code, code_verifier=record["code_verifier"])
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise LoginFailed(502, "no_id_token", "The sign-in service did not send an identity token.")
        claims = await provider.verify_id_token(id_token, nonce=record["nonce"], now=clock.now())
    except OIDCError as exc:
        status = 503 if exc.reason.startswith("provider_") else 401
        raise LoginFailed(status, exc.reason, exc.message) from exc

    session_id = new_session_id()
    login_context = AuditContext(
        session_hash=hash_session_id(session_id), client_addr=context.client_addr, request_id=context.request_id
    )
    now = clock.now()
    async with transaction(db) as session:
        outcome = await sign_in_user(
            session, provider_name=provider_name, groups_claim=provider.config.groups_claim, claims=claims,
            now=now, context=login_context,
        )
    if outcome.refused_reason is not None or outcome.user_id is None:
        return LoginResult(outcome, None), record["return_path"]
    await start_session(
        services, session_id=session_id, user_id=outcome.user_id, provider=provider_name, now=now,
        data={"id_token": id_token},  # kept server-side only, as id_token_hint for the provider's sign-out
    )
    return LoginResult(outcome, session_id), record["return_path"]
