"""People as Enclave knows them: just-in-time creation at login, linking SCIM-provisioned people, role
re-evaluation from claims (plus SCIM group memberships) at every login and on every SCIM change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.auth.mapping import MappingResult, map_claims_to_roles
from portal.db.models import RoleAssignment, RoleMappingRule, ScimGroup, ScimGroupMember, User
from portal.settings import RoleRuleSettings

# Claims that only matter to the login itself: not kept on the user.
_TRANSIENT_CLAIMS = {"nonce", "at_hash", "c_hash", "auth_time", "exp", "iat", "nbf", "jti", "sid", "azp"}
SCIM_GROUPS_CLAIM = "groups"


@dataclass(frozen=True)
class LoginOutcome:
    user_id: str | None
    display_name: str
    email: str | None
    roles: frozenset[str]
    mapping: MappingResult
    refused_reason: str | None  # None: signed in; "no_role" | "denied" | "deactivated"


async def load_rules(session: AsyncSession) -> list[RoleMappingRule]:
    rows = await session.execute(select(RoleMappingRule).order_by(RoleMappingRule.position, RoleMappingRule.created_at))
    return list(rows.scalars())


async def install_configured_rules(session: AsyncSession, rules: Sequence[RoleRuleSettings]) -> int:
    """ENCLAVE_ROLE_RULES into an EMPTY rules table (production starts without sample data: without this,
    nobody, administrators included, could sign in to add rules). Once rules exist, admins own them."""
    if not rules or (await session.execute(select(RoleMappingRule.id).limit(1))).first():
        return 0
    for position, rule in enumerate(rules):
        session.add(
            RoleMappingRule(
                position=position, provider=rule.provider, claim=rule.claim, match=rule.match, value=rule.value,
                role=rule.role, effect=rule.effect,
            )
        )
    return len(rules)


async def scim_group_names(session: AsyncSession, user_id: str) -> list[str]:
    rows = await session.execute(
        select(ScimGroup.display_name, ScimGroup.external_id)
        .join(ScimGroupMember, ScimGroupMember.group_id == ScimGroup.id)
        .where(ScimGroupMember.user_id == user_id)
    )
    names: list[str] = []
    for display_name, external_id in rows.all():
        names.append(display_name)
        if external_id:
            names.append(external_id)  # Entra sends group object ids in tokens; SCIM carries them as externalId
    return names


def with_extra_groups(claims: Mapping[str, Any], groups_claim: str, extra: Sequence[str]) -> dict[str, Any]:
    merged = dict(claims)
    if extra:
        current = merged.get(groups_claim)
        values = list(current) if isinstance(current, list) else ([current] if current else [])
        merged[groups_claim] = values + [g for g in extra if g not in values]
    return merged


async def replace_roles(
    session: AsyncSession, user: User, roles: frozenset[str], source: str, now: datetime
) -> frozenset[str]:
    """Set the claim-derived roles; roles an administrator granted by hand stay. Returns all roles held now."""
    kept = frozenset(
        (
            await session.execute(
                select(RoleAssignment.role).where(RoleAssignment.user_id == user.id, RoleAssignment.source == "admin")
            )
        ).scalars()
    )
    await session.execute(
        delete(RoleAssignment).where(RoleAssignment.user_id == user.id, RoleAssignment.source != "admin")
    )
    for role in sorted(roles - kept):
        session.add(RoleAssignment(user_id=user.id, role=role, source=source, assigned_at=now))
    await session.flush()
    return kept | roles


async def _find_user(session: AsyncSession, issuer: str, subject: str, claims: Mapping[str, Any]) -> User | None:
    user = (
        await session.execute(select(User).where(User.issuer == issuer, User.subject == subject))
    ).scalar_one_or_none()
    if user is not None:
        return user
    # A person provisioned by SCIM before their first login: link by userName or email.
    names = {str(claims[k]) for k in ("email", "preferred_username", "upn") if isinstance(claims.get(k), str)}
    if not names:
        return None
    lowered = sorted({n.lower() for n in names} | names)
    rows = await session.execute(
        select(User)
        .where(User.issuer.is_(None), or_(User.scim_user_name.in_(lowered), User.email.in_(lowered)))
        .order_by(User.created_at)
        .limit(1)
    )
    return rows.scalar_one_or_none()


def _display_name(claims: Mapping[str, Any]) -> str:
    for key in ("name", "preferred_username", "email"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    given = " ".join(str(claims.get(k, "")) for k in ("given_name", "family_name")).strip()
    return given[:200] or str(claims.get("sub", ""))[:200]


async def sign_in_user(
    session: AsyncSession,
    *,
    provider_name: str,
    groups_claim: str,
    claims: Mapping[str, Any],
    now: datetime,
    context: AuditContext,
) -> LoginOutcome:
    """Map the verified claims to roles, create or update the person, and audit the result (one transaction)."""
    issuer, subject = str(claims["iss"]), str(claims["sub"])
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    user = await _find_user(session, issuer, subject, claims)
    kept_claims = {k: v for k, v in claims.items() if k not in _TRANSIENT_CLAIMS}
    extra = await scim_group_names(session, user.id) if user is not None else []
    mapping = map_claims_to_roles(with_extra_groups(claims, groups_claim, extra), await load_rules(session), provider_name)
    detail: dict[str, Any] = {"provider": provider_name, "issuer": issuer, "subject": subject}

    refused: str | None = None
    if user is not None and user.status != "active":
        refused = "deactivated"
    elif mapping.denied:
        refused = "denied"
    elif not mapping.roles:
        refused = "no_role"

    if refused is not None:
        if user is not None and refused != "deactivated":
            user.last_claims = kept_claims
            await replace_roles(session, user, frozenset(), "oidc", now)
        await append_audit(
            session, at=now, action="auth.login_refused", context=context, object_type="user",
            object_ids=[user.id] if user else [], outcome="denied",
            detail=detail | {"reason": refused, "matched_rules": len(mapping.matched_rules)},
        )
        return LoginOutcome(
            user.id if user else None, _display_name(claims), email, frozenset(), mapping, refused
        )

    if user is None:
        user = User(issuer=issuer, subject=subject, provider=provider_name, created_at=now)
        session.add(user)
        detail["created"] = True
    else:
        user.issuer, user.subject, user.provider = issuer, subject, provider_name
    user.email = email or user.email
    user.display_name = _display_name(claims)
    user.last_login_at = now
    user.last_claims = kept_claims
    await session.flush()
    roles = await replace_roles(session, user, mapping.roles, "oidc", now)
    login_context = AuditContext(
        user_id=user.id, roles=tuple(sorted(roles)), session_hash=context.session_hash,
        client_addr=context.client_addr, request_id=context.request_id,
    )
    await append_audit(
        session, at=now, action="auth.login", context=login_context, object_type="user", object_ids=[user.id],
        detail=detail | {"roles": sorted(roles)},
    )
    return LoginOutcome(user.id, user.display_name, user.email, roles, mapping, None)


async def reevaluate_roles_from_directory(session: AsyncSession, user: User, now: datetime) -> frozenset[str]:
    """After a SCIM change: last login's claims plus current SCIM groups decide the roles (before any login too)."""
    claims = dict(user.last_claims or {})
    if user.email and "email" not in claims:
        claims["email"] = user.email
    claims = with_extra_groups(claims, SCIM_GROUPS_CLAIM, await scim_group_names(session, user.id))
    mapping = map_claims_to_roles(claims, await load_rules(session), user.provider)
    roles = frozenset() if mapping.refused else mapping.roles
    return await replace_roles(session, user, roles, "scim", now)
