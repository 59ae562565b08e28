"""People and the claim -> role mapping: list users, deactivate (ending their sessions), edit rules, preview a mapping.

Ending sessions goes through the auth area's session service (Redis or database, whichever this site uses).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.admin.actor import Actor, require_admin
from portal.admin.errors import BadInput, Conflict, NotFound
from portal.audit import append_audit
from portal.auth.mapping import MappingResult, map_claims_to_roles
from portal.db.engine import transaction
from portal.db.models import RoleMappingRule, User
from portal.runtime import Runtime

MATCHES = ("equals", "contains", "email_domain")
EFFECTS = ("allow", "deny")
SessionEnder = Callable[[str], Awaitable[int]]


@dataclass(frozen=True)
class PersonRow:
    user: User
    roles: list[tuple[str, str]]  # (role, source)


async def list_people(session: AsyncSession, search: str = "", limit: int = 200) -> list[PersonRow]:
    stmt = select(User).order_by(User.last_login_at.desc().nulls_last(), User.display_name).limit(limit)
    if search.strip():
        like = f"%{search.strip().lower()}%"
        stmt = stmt.where(or_(func.lower(User.email).like(like), func.lower(User.display_name).like(like)))
    users = (await session.execute(stmt)).scalars().all()
    return [PersonRow(u, sorted((r.role, r.source) for r in u.roles)) for u in users]


async def set_active(runtime: Runtime, actor: Actor, user_id: str, *, active: bool, end_sessions: SessionEnder) -> int:
    """Deactivate (and end every session at once) or reactivate a person; returns the sessions ended."""
    action = "user.reactivate" if active else "user.deactivate"
    await require_admin(runtime, actor, action, "user", [user_id])
    if not active and user_id == actor.principal.user_id:
        raise Conflict("You cannot deactivate yourself; ask another administrator.")
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound("That person does not exist.")
        user.status = "active" if active else "deactivated"
        user.deactivated_at = None if active else now
        await append_audit(session, at=now, action=action, context=actor.audit, object_type="user", object_ids=[user_id])
    # After the commit: a request racing this one sees the deactivated status even if it holds a session.
    ended = 0 if active else await end_sessions(user_id)
    if ended:
        async with transaction(runtime.db) as session:
            await append_audit(session, at=runtime.clock.now(), action="user.sessions_ended", context=actor.audit,
                               object_type="user", object_ids=[user_id], detail={"sessions": ended})
    return ended


async def list_rules(session: AsyncSession) -> list[RoleMappingRule]:
    return list((await session.execute(select(RoleMappingRule).order_by(RoleMappingRule.position, RoleMappingRule.created_at))).scalars())


def _validated_rule(fields: dict[str, str]) -> dict[str, Any]:
    claim = fields.get("claim", "").strip()
    value = fields.get("value", "").strip()
    role = fields.get("role", "").strip().lower()
    match = fields.get("match", "equals")
    effect = fields.get("effect", "allow")
    provider = fields.get("provider", "").strip() or None
    if not claim or len(claim) > 100:
        raise BadInput("Name the claim the rule reads (for example groups, roles or email).")
    if not value or len(value) > 500:
        raise BadInput("Give the claim value the rule matches.")
    if match not in MATCHES:
        raise BadInput("The match must be equals, contains or email_domain.")
    if effect not in EFFECTS:
        raise BadInput("The effect must be allow or deny.")
    if not role or (role != "*" and not role.replace("-", "").replace("_", "").replace(".", "").isalnum()) or len(role) > 64:
        raise BadInput("The role is a short name such as nurse or teacher (or * with deny, to refuse everything).")
    if role == "*" and effect != "deny":
        raise BadInput("The role * is only meaningful with the deny effect.")
    return {"claim": claim, "value": value, "role": role, "match": match, "effect": effect, "provider": provider}


async def add_rule(runtime: Runtime, actor: Actor, fields: dict[str, str]) -> str:
    await require_admin(runtime, actor, "role_rule.add", "role_rule", [])
    values = _validated_rule(fields)
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        position = (await session.scalar(select(func.max(RoleMappingRule.position)))) or 0
        rule = RoleMappingRule(position=position + 1, created_at=now, **values)
        session.add(rule)
        await session.flush()
        await append_audit(session, at=now, action="role_rule.add", context=actor.audit, object_type="role_rule",
                           object_ids=[rule.id], detail=values)
        return rule.id


async def delete_rule(runtime: Runtime, actor: Actor, rule_id: str) -> None:
    await require_admin(runtime, actor, "role_rule.delete", "role_rule", [rule_id])
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        rule = await session.get(RoleMappingRule, rule_id)
        if rule is None:
            raise NotFound("That rule does not exist.")
        detail = {"claim": rule.claim, "match": rule.match, "value": rule.value, "role": rule.role, "effect": rule.effect}
        await session.delete(rule)
        await append_audit(session, at=now, action="role_rule.delete", context=actor.audit, object_type="role_rule",
                           object_ids=[rule_id], detail=detail)


def parse_claims(text: str) -> dict[str, Any]:
    """Claims as JSON (what an ID token carries), e.g. {"groups": ["nurses"], "email": "a@b.org"}."""
    try:
        claims = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise BadInput(f"The claims are not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    if not isinstance(claims, dict):
        raise BadInput('The claims must be a JSON object, such as {"groups": ["nurses"]}.')
    return claims


async def preview_mapping(runtime: Runtime, claims_text: str, provider: str | None) -> MappingResult:
    claims = parse_claims(claims_text)
    async with runtime.db() as session:
        rules = await list_rules(session)
    return map_claims_to_roles(claims, rules, provider or None)
