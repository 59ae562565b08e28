"""SCIM 2.0 Groups: create, read, list, rename, membership add/remove, delete; members' roles follow."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.auth.scim_service import (
    GROUP_SCHEMA,
    LIST_SCHEMA,
    MAX_PAGE,
    MEMBER_PATH,
    ScimChange,
    ScimError,
    parse_filter,
    patch_operations,
    require_str,
)
from portal.auth.users import reevaluate_roles_from_directory
from portal.db.models import ScimGroup, ScimGroupMember, User


async def group_resource(session: AsyncSession, group: ScimGroup, base_url: str) -> dict[str, Any]:
    members = await session.execute(
        select(User.id, User.display_name)
        .join(ScimGroupMember, ScimGroupMember.user_id == User.id)
        .where(ScimGroupMember.group_id == group.id)
        .order_by(User.id)
    )
    return {
        "schemas": [GROUP_SCHEMA],
        "id": group.id,
        "externalId": group.external_id,
        "displayName": group.display_name,
        "members": [{"value": uid, "display": name} for uid, name in members.all()],
        "meta": {"resourceType": "Group", "created": group.created_at.isoformat(), "location": f"{base_url}/Groups/{group.id}"},
    }


async def _get_group(session: AsyncSession, group_id: str) -> ScimGroup:
    group = await session.get(ScimGroup, group_id)
    if group is None:
        raise ScimError(404, f"Group {group_id} not found")
    return group


def _member_ids(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    ids = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise ScimError(400, "Members are objects with a 'value' (the user id)", "invalidValue")
        ids.append(item["value"])
    return ids


async def _current_members(session: AsyncSession, group_id: str) -> set[str]:
    rows = await session.execute(select(ScimGroupMember.user_id).where(ScimGroupMember.group_id == group_id))
    return set(rows.scalars())


async def _set_members(session: AsyncSession, group: ScimGroup, wanted: set[str]) -> set[str]:
    """Make the membership `wanted`; returns every user whose membership changed."""
    if wanted:
        known = set((await session.execute(select(User.id).where(User.id.in_(sorted(wanted))))).scalars())
        if unknown := wanted - known:
            raise ScimError(400, f"Unknown member id(s): {', '.join(sorted(unknown))}", "invalidValue")
    current = await _current_members(session, group.id)
    for user_id in wanted - current:
        session.add(ScimGroupMember(group_id=group.id, user_id=user_id))
    if removed := current - wanted:
        await session.execute(
            delete(ScimGroupMember).where(ScimGroupMember.group_id == group.id, ScimGroupMember.user_id.in_(sorted(removed)))
        )
    await session.flush()
    return (wanted - current) | removed


async def _reevaluate(session: AsyncSession, user_ids: set[str], now: datetime) -> None:
    for user_id in sorted(user_ids):
        user = await session.get(User, user_id)
        if user is not None:
            await reevaluate_roles_from_directory(session, user, now)


async def _check_name_free(session: AsyncSession, name: str, group_id: str | None) -> None:
    query = select(ScimGroup.id).where(func.lower(ScimGroup.display_name) == name.lower())
    if group_id:
        query = query.where(ScimGroup.id != group_id)
    if (await session.execute(query)).first():
        raise ScimError(409, f"A group named {name!r} already exists", "uniqueness")


async def create_group(
    session: AsyncSession, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    name = require_str(payload, "displayName")
    await _check_name_free(session, name, None)
    group = ScimGroup(display_name=name, external_id=payload.get("externalId"), created_at=now)
    session.add(group)
    await session.flush()
    changed = await _set_members(session, group, set(_member_ids(payload.get("members"))))
    await _reevaluate(session, changed, now)
    await append_audit(
        session, at=now, action="scim.group_created", context=context, object_type="group", object_ids=[group.id],
        detail={"members_changed": len(changed)},
    )
    return ScimChange(resource=await group_resource(session, group, base_url))


async def get_group(session: AsyncSession, group_id: str, base_url: str) -> dict[str, Any]:
    return await group_resource(session, await _get_group(session, group_id), base_url)


async def list_groups(
    session: AsyncSession, filter_expr: str | None, start_index: int, count: int, base_url: str
) -> dict[str, Any]:
    condition = parse_filter(filter_expr, {"displayname": ScimGroup.display_name, "externalid": ScimGroup.external_id})
    query = select(ScimGroup).order_by(ScimGroup.created_at, ScimGroup.id)
    if condition is not None:
        query = query.where(condition)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    start, size = max(1, start_index), max(0, min(count, MAX_PAGE))
    rows = (await session.execute(query.offset(start - 1).limit(size))).scalars()
    resources = [await group_resource(session, g, base_url) for g in rows]
    return {"schemas": [LIST_SCHEMA], "totalResults": total, "startIndex": start, "itemsPerPage": len(resources), "Resources": resources}


async def replace_group(
    session: AsyncSession, group_id: str, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    group = await _get_group(session, group_id)
    name = require_str(payload, "displayName")
    await _check_name_free(session, name, group.id)
    group.display_name = name
    group.external_id = payload.get("externalId", group.external_id)
    changed = await _set_members(session, group, set(_member_ids(payload.get("members"))))
    await _reevaluate(session, changed | await _current_members(session, group.id), now)
    await append_audit(session, at=now, action="scim.group_updated", context=context, object_type="group", object_ids=[group.id])
    return ScimChange(resource=await group_resource(session, group, base_url))


async def patch_group(
    session: AsyncSession, group_id: str, payload: dict[str, Any], now: datetime, context: AuditContext, base_url: str
) -> ScimChange:
    group = await _get_group(session, group_id)
    members = await _current_members(session, group.id)
    renamed = False
    for kind, path, value in patch_operations(payload):
        path_l = (path or "").lower()
        if kind in ("add", "replace") and path_l == "members":
            ids = set(_member_ids(value))
            members = (members | ids) if kind == "add" else ids
        elif kind == "remove" and path_l == "members":
            members = members - set(_member_ids(value)) if value else set()
        elif kind == "remove" and path and (m := MEMBER_PATH.match(path)):
            members.discard(m.group(1))
        elif kind in ("replace", "add") and (path_l == "displayname" or (not path and isinstance(value, dict))):
            name = value if path else value.get("displayName")
            if not isinstance(name, str) or not name.strip():
                raise ScimError(400, "'displayName' must be a non-empty string", "invalidValue")
            await _check_name_free(session, name.strip(), group.id)
            group.display_name, renamed = name.strip(), True
        elif kind in ("replace", "add") and path_l == "externalid":
            group.external_id = str(value) if value is not None else None
        else:
            raise ScimError(400, f"Unsupported PATCH operation {kind!r} on {path or 'the group'!r}", "invalidPath")
    changed = await _set_members(session, group, members)
    # A rename changes the `groups` value every member carries, so all members are re-evaluated.
    await _reevaluate(session, changed | (await _current_members(session, group.id) if renamed else set()), now)
    await append_audit(
        session, at=now, action="scim.group_updated", context=context, object_type="group", object_ids=[group.id],
        detail={"members_changed": len(changed), "renamed": renamed},
    )
    return ScimChange(resource=await group_resource(session, group, base_url))


async def delete_group(session: AsyncSession, group_id: str, now: datetime, context: AuditContext) -> ScimChange:
    group = await _get_group(session, group_id)
    members = await _current_members(session, group.id)
    await session.execute(delete(ScimGroupMember).where(ScimGroupMember.group_id == group.id))
    await session.delete(group)
    await session.flush()
    await _reevaluate(session, members, now)
    await append_audit(session, at=now, action="scim.group_deleted", context=context, object_type="group", object_ids=[group_id])
    return ScimChange()
