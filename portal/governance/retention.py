"""Retention policies: how long a person's conversations are kept, decided from their roles.

The rule (also in the README's privacy officer section):
1. Each role may have a policy (``retention_policies``); a role without one counts as the default period
   (``settings.default_retention_days``, 90 days unless configured).
2. A person with several roles gets the SHORTEST of their roles' periods: the most protective rule wins.
3. Unless one or more of their roles' policies is marked ``overrides_shorter``: then the LONGEST of those
   overriding policies applies (for example a records-keeping role that must keep conversations a year).
4. 0 days means zero retention: the conversation is never written down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit import AuditContext, append_audit
from portal.db.models import Collection, Document, RetentionPolicy

# The same default as Settings.default_retention_days; callers with settings pass theirs.
DEFAULT_RETENTION_DAYS = 90


@dataclass(frozen=True)
class RetentionDecision:
    """How long, and which policy decided it (named in purge receipts)."""

    days: int
    policy: str  # "role:<name>" or "default"

    @property
    def zero_retention(self) -> bool:
        return self.days == 0


class RolePolicy(Protocol):
    """What the rule reads of a role's policy: a RetentionPolicy, or a row of its columns."""

    @property
    def role(self) -> str: ...
    @property
    def conversation_days(self) -> int: ...
    @property
    def overrides_shorter(self) -> bool: ...


def decide_retention(
    policies: Mapping[str, RolePolicy], roles: Iterable[str], default_days: int = DEFAULT_RETENTION_DAYS
) -> RetentionDecision:
    """The rule above on already-loaded policies (the purge decides for many people with one query)."""
    role_list = sorted(set(roles))
    overriding = [policies[r] for r in role_list if r in policies and policies[r].overrides_shorter]
    if overriding:
        longest = max(overriding, key=lambda p: (p.conversation_days, p.role))
        return RetentionDecision(longest.conversation_days, f"role:{longest.role}")
    candidates: list[RetentionDecision] = []
    for role in role_list:
        policy = policies.get(role)
        candidates.append(
            RetentionDecision(policy.conversation_days, f"role:{role}")
            if policy
            else RetentionDecision(default_days, "default")
        )
    if not candidates:
        return RetentionDecision(default_days, "default")
    return min(candidates, key=lambda d: (d.days, d.policy))


async def load_policies(session: AsyncSession) -> dict[str, RetentionPolicy]:
    rows = (await session.execute(select(RetentionPolicy))).scalars().all()
    return {p.role: p for p in rows}


async def retention_decision(
    session: AsyncSession, roles: Iterable[str], *, default_days: int = DEFAULT_RETENTION_DAYS
) -> RetentionDecision:
    role_list = sorted(set(roles))
    rows = (
        (await session.execute(select(RetentionPolicy).where(RetentionPolicy.role.in_(role_list)))).scalars().all()
        if role_list
        else []
    )
    return decide_retention({p.role: p for p in rows}, role_list, default_days)


async def conversation_retention_days(
    session: AsyncSession, roles: Iterable[str], *, default_days: int = DEFAULT_RETENTION_DAYS
) -> int:
    """Days a conversation of someone holding `roles` is kept after its last activity; 0 = never written down.

    Chat passes ``default_days=settings.default_retention_days``.
    """
    return (await retention_decision(session, roles, default_days=default_days)).days


# Administration (the retention admin page) ----------------------------------------------------------------


class PolicyError(ValueError):
    """A policy edit that cannot be applied; the message is shown to the admin as is."""


async def list_policies(session: AsyncSession) -> Sequence[RetentionPolicy]:
    return (await session.execute(select(RetentionPolicy).order_by(RetentionPolicy.role))).scalars().all()


async def save_policy(
    session: AsyncSession,
    *,
    role: str,
    conversation_days: int,
    overrides_shorter: bool,
    allow_general_answers: bool,
    now: datetime,
    context: AuditContext,
) -> RetentionPolicy:
    """Create or update the policy of one role (audited with before and after)."""
    role = role.strip()
    if not role or len(role) > 64:
        raise PolicyError("Give the role a name of 1 to 64 characters.")
    if conversation_days < 0 or conversation_days > 36500:
        raise PolicyError("Days must be between 0 (zero retention) and 36500.")
    policy = (await session.execute(select(RetentionPolicy).where(RetentionPolicy.role == role))).scalar_one_or_none()
    before = _policy_dict(policy) if policy else None
    if policy is None:
        policy = RetentionPolicy(role=role, created_at=now)
        session.add(policy)
    policy.conversation_days = conversation_days
    policy.overrides_shorter = overrides_shorter
    policy.allow_general_answers = allow_general_answers
    policy.updated_at = now
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="retention.policy_saved",
        context=context,
        object_type="retention_policy",
        object_ids=[policy.id],
        detail={"before": before, "after": _policy_dict(policy)},
    )
    return policy


async def delete_policy(session: AsyncSession, *, role: str, now: datetime, context: AuditContext) -> None:
    policy = (await session.execute(select(RetentionPolicy).where(RetentionPolicy.role == role))).scalar_one_or_none()
    if policy is None:
        raise PolicyError(f"There is no retention policy for the role {role!r}.")
    before = _policy_dict(policy)
    await session.delete(policy)
    await session.flush()
    await append_audit(
        session,
        at=now,
        action="retention.policy_deleted",
        context=context,
        object_type="retention_policy",
        object_ids=[policy.id],
        detail={"before": before},
    )


def _policy_dict(policy: RetentionPolicy) -> dict[str, object]:
    return {
        "role": policy.role,
        "conversation_days": policy.conversation_days,
        "overrides_shorter": policy.overrides_shorter,
        "allow_general_answers": policy.allow_general_answers,
    }


# Documents: expiry per collection (time-to-live) or per document ----------------------------------------------


async def set_collection_ttl(
    session: AsyncSession, *, collection_id: str, days: int | None, now: datetime, context: AuditContext
) -> int:
    """Set (or clear, with None) how long a collection's documents live after upload. Documents without an
    expiry date get one now (upload + days), so retrieval stops returning them on that date; returns how many."""
    if days is not None and not 1 <= days <= 36500:
        raise PolicyError("A document lifetime is between 1 and 36500 days (leave it empty to keep documents).")
    collection = await session.get(Collection, collection_id)
    if collection is None:
        raise PolicyError("There is no such collection.")
    before = collection.document_ttl_days
    collection.document_ttl_days = days
    stamped = 0
    if days is not None:
        documents = (
            await session.execute(
                select(Document).where(Document.collection_id == collection_id, Document.expires_at.is_(None))
            )
        ).scalars()
        for document in documents:
            document.expires_at = document.created_at + timedelta(days=days)
            stamped += 1
    await session.flush()
    await append_audit(
        session, at=now, action="retention.collection_ttl_set", context=context, object_type="collection",
        object_ids=[collection_id], detail={"before": before, "after": days, "documents_given_expiry": stamped},
    )
    return stamped


async def set_document_expiry(
    session: AsyncSession, *, document_id: str, expires_at: datetime | None, now: datetime, context: AuditContext
) -> None:
    """One document's expiry date (None: never). From that moment it is not retrieved; the purge removes it."""
    document = await session.get(Document, document_id)
    if document is None:
        raise PolicyError("There is no such document.")
    before = document.expires_at
    document.expires_at = expires_at
    await session.flush()
    await append_audit(
        session, at=now, action="retention.document_expiry_set", context=context, object_type="document",
        object_ids=[document_id],
        detail={"before": before.isoformat() if before else None, "after": expires_at.isoformat() if expires_at else None},
    )
