"""Who performs an admin action and the checks every service makes first: may they manage this collection?

Refusals are audited in their own transaction (the action's transaction rolls back), then raised.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.access import ADMIN_ROLE, can_manage_collection
from portal.admin.errors import Forbidden
from portal.audit import AuditContext, append_audit
from portal.db.engine import transaction
from portal.principal import Principal
from portal.runtime import Runtime


@dataclass(frozen=True)
class Actor:
    principal: Principal
    audit: AuditContext

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.principal.roles


async def record_denied(
    runtime: Runtime, actor: Actor, action: str, object_type: str, object_ids: list[str], reason: str
) -> None:
    async with transaction(runtime.db) as session:
        await append_audit(
            session,
            at=runtime.clock.now(),
            action=action,
            context=actor.audit,
            object_type=object_type,
            object_ids=object_ids,
            outcome="denied",
            detail={"reason": reason},
        )


async def require_admin(runtime: Runtime, actor: Actor, action: str, object_type: str, object_ids: list[str]) -> None:
    if not actor.is_admin:
        await record_denied(runtime, actor, action, object_type, object_ids, "not an administrator")
        raise Forbidden("Only administrators may do this.")


async def require_manager(
    runtime: Runtime, actor: Actor, collection_id: str, action: str, object_type: str, object_ids: list[str]
) -> None:
    """Admins, or the collection's managers (by role or by person); anyone else is refused and audited."""
    # A session of its own, closed before the refusal is audited: on SQLite every transaction holds the write lock.
    async with runtime.db() as session:
        allowed = await can_manage_collection(session, actor.principal, collection_id)
    if allowed:
        return
    await record_denied(runtime, actor, action, object_type, object_ids, "not a manager of this collection")
    raise Forbidden("You do not manage this collection.")
