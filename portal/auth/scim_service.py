"""SCIM 2.0 provisioning (the subset Entra ID and Okta use): Users and Groups as resources, filters, PATCH.

Deactivation and deletion return the user ids whose sessions must end; group changes re-evaluate roles, so a
directory that provisions groups gives people their roles before they ever sign in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.auth.users import reevaluate_roles_from_directory
from portal.db.models import ScimGroup, ScimGroupMember, User

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MAX_PAGE = 200

_FILTER = re.compile(r'^\s*([A-Za-z.]+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$')
MEMBER_PATH = re.compile(r'^members\[\s*value\s+eq\s+"([^"]+)"\s*\]$', re.IGNORECASE)


class ScimError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


@dataclass
class ScimChange:
    """What the controller must do after the transaction commits."""

    resource: dict[str, Any] | None = None
    end_sessions_for: list[str] = field(default_factory=list)


def parse_filter(expression: str | None, allowed: dict[str, Any]) -> Any | None:
    """`attr eq "value"` only (what Entra and Okta send); anything else is a clear invalidFilter."""
    if not expression:
        return None
    match = _FILTER.match(expression)
    if not match or match.group(1).lower() not in allowed:
        raise ScimError(400, f"Unsupported filter; use one of: {', '.join(sorted(allowed))} eq \"...\"", "invalidFilter")
    column = allowed[match.group(1).lower()]
    return column == match.group(2).replace('\\"', '"')


def require_str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ScimError(400, f"'{key}' is required and must be a non-empty string", "invalidValue")
    return value.strip()


def _primary_email(payload: dict[str, Any]) -> str | None:
    emails = payload.get("emails")
    if not isinstance(emails, list):
        return None
    valid = [e for e in emails if isinstance(e, dict) and isinstance(e.get("value"), str)]
    primary = [e for e in valid if e.get("primary")] or valid
    return str(primary[0]["value"]) if primary else None


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ScimError(400, "'active' must be true or false", "invalidValue")


# Users --------------------------------------------------------------------------------------------------------


async def user_resource(session: AsyncSession, user: User, base_url: str) -> dict[str, Any]:
    groups = await session.execute(
        select(ScimGroup.id, ScimGroup.display_name)
        .join(ScimGroupMember, ScimGroupMember.group_id == ScimGroup.id)
        .where(ScimGroupMember.user_id == user.id)
    )
    return {
        "schemas": [USER_SCHEMA],
        "id": user.id,
        "externalId": user.scim_external_id,
        "userName": user.scim_user_name or user.email,
        "displayName": user.display_name,
        "name": {"formatted": user.display_name},
        "emails": [{"value": user.email, "primary": True, "type": "work"}] if user.email else [],
        "active": user.status == "active",
        "groups": [{"value": gid, "display": name} for gid, name in groups.all()],
        "meta": {
            "resourceType": "User",
            "created": user.created_at.isoformat(),
            "location": f"{base_url}/Users/{user.id}",
        },
    }


async def _get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise ScimError(404, f"User {user_id} not found")
    return user


async def _apply_user_fields(session: AsyncSession, user: User, payload: dict[str, Any]) -> None:
    if "userName" in payload:
        user_name = require_str(payload, "userName")
        clash = await session.execute(
            select(User.id).where(func.lower(User.scim_user_name) == user_name.lower(), User.id != user.id)
        )
        if clash.first():
            raise ScimError(409, f"userName {user_name!r} is already taken", "uniqueness")
        user.scim_user_name = user_name
    if "externalId" in payload:
        user.scim_external_id = str(payload["externalId"]) if payload["externalId"] is not None else None
    name = payload.get("name")
    display = payload.get("displayName") or (name.get("formatted") if isinstance(name, dict) else None)
    if isinstance(name, dict) and not display:
        display = " ".join(str(name.get(k, "")) for k in ("givenName", "familyName")).strip()
    if isinstance(display, str) and display:
        user.display_name = display[:200]
    email = _primary_email(payload)
    if email:
        user.email = email
    elif "emails" not in payload and user.email is None and user.scim_user_name and "@" in user.scim_user_name:
        user.email = user.scim_user_name


def _set_active(user: User, active: bool, now: datetime, change: ScimChange) -> None:
    if active:
        user.status, user.deactivated_at = "active", None
    elif user.status != "deactivated":
        user.status, user.deactivated_at = "deactivated", now
        change.end_sessions_for.append(user.id)


async def create_user(
    session: AsyncSession, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    user_name = require_str(payload, "userName")
    user = User(scim_user_name=None, created_at=now, status="active", display_name="")
    session.add(user)
    await _apply_user_fields(session, user, payload | {"userName": user_name})
    change = ScimChange()
    if "active" in payload:
        _set_active(user, _as_bool(payload["active"]), now, change)
    await session.flush()
    await reevaluate_roles_from_directory(session, user, now)
    await append_audit(session, at=now, action="scim.user_created", context=context, object_type="user", object_ids=[user.id])
    change.resource = await user_resource(session, user, base_url)
    return change


async def get_user(session: AsyncSession, user_id: str, base_url: str) -> dict[str, Any]:
    return await user_resource(session, await _get_user(session, user_id), base_url)


async def list_users(
    session: AsyncSession, filter_expr: str | None, start_index: int, count: int, base_url: str
) -> dict[str, Any]:
    condition = parse_filter(
        filter_expr, {"username": User.scim_user_name, "externalid": User.scim_external_id, "emails.value": User.email}
    )
    query = select(User).order_by(User.created_at, User.id)
    if condition is not None:
        query = query.where(condition)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    start, size = max(1, start_index), max(0, min(count, MAX_PAGE))
    rows = (await session.execute(query.offset(start - 1).limit(size))).scalars()
    resources = [await user_resource(session, u, base_url) for u in rows]
    return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start, "itemsPerPage": len(resources), "Resources": resources}


async def replace_user(
    session: AsyncSession, user_id: str, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    user = await _get_user(session, user_id)
    require_str(payload, "userName")
    change = ScimChange()
    await _apply_user_fields(session, user, payload)
    _set_active(user, _as_bool(payload.get("active", True)), now, change)
    await _after_user_change(session, user, now, context, change)
    change.resource = await user_resource(session, user, base_url)
    return change


async def patch_user(
    session: AsyncSession, user_id: str, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    user = await _get_user(session, user_id)
    change = ScimChange()
    for op in patch_operations(payload):
        kind, path, value = op
        if kind not in ("replace", "add"):
            raise ScimError(400, f"Unsupported PATCH op {kind!r} on a User", "invalidSyntax")
        # Entra sends {"op": "Replace", "path": "active", "value": "False"}; Okta sends value objects without path.
        fields = {path: value} if path else (value if isinstance(value, dict) else None)
        if fields is None:
            raise ScimError(400, "PATCH without a path needs an object value", "invalidValue")
        for key, item in fields.items():
            key_l = key.lower()
            if key_l == "active":
                _set_active(user, _as_bool(item), now, change)
            elif key_l in ("username", "displayname", "externalid", "emails", "name"):
                canonical = {"username": "userName", "displayname": "displayName", "externalid": "externalId"}.get(key_l, key_l)
                await _apply_user_fields(session, user, {canonical: item})
            elif key_l.startswith("emails[") or key_l.startswith("name."):
                if key_l.startswith("emails[") and isinstance(item, str):
                    user.email = item
                elif key_l == "name.formatted" and isinstance(item, str):
                    user.display_name = item[:200]
            else:
                raise ScimError(400, f"Unsupported attribute {key!r}", "invalidPath")
    await _after_user_change(session, user, now, context, change)
    change.resource = await user_resource(session, user, base_url)
    return change


async def _after_user_change(
    session: AsyncSession, user: User, now: datetime, context: AuditContext, change: ScimChange
) -> None:
    await session.flush()
    action = "scim.user_deactivated" if user.id in change.end_sessions_for else "scim.user_updated"
    await append_audit(
        session, at=now, action=action, context=context, object_type="user", object_ids=[user.id],
        detail={"active": user.status == "active"},
    )


async def delete_user(session: AsyncSession, user_id: str, now: datetime, context: AuditContext) -> ScimChange:
    user = await _get_user(session, user_id)
    await session.delete(user)
    await append_audit(session, at=now, action="scim.user_deleted", context=context, object_type="user", object_ids=[user_id])
    return ScimChange(end_sessions_for=[user_id])


def patch_operations(payload: dict[str, Any]) -> list[tuple[str, str | None, Any]]:
    ops = payload.get("Operations")
    if not isinstance(ops, list) or not ops:
        raise ScimError(400, "PATCH needs a non-empty 'Operations' list", "invalidSyntax")
    parsed: list[tuple[str, str | None, Any]] = []
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ScimError(400, "Each operation needs an 'op'", "invalidSyntax")
        path = op.get("path")
        parsed.append((op["op"].lower(), path if isinstance(path, str) else None, op.get("value")))
    return parsed
