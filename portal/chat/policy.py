"""What chat allows one person, from their roles: questions per minute, answer length, general answers, retention."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from portal.db.engine import on_async_session
from portal.db.tables import RETENTION_POLICIES
from portal.governance.retention import decide_retention
from portal.principal import Principal
from portal.settings import Settings

RATE_WINDOW = timedelta(minutes=1)
# What decide_retention and general answers read of the role policies, built once (see portal.db.tables).
_ROLE_POLICIES = select(
    RETENTION_POLICIES.c.role, RETENTION_POLICIES.c.conversation_days, RETENTION_POLICIES.c.overrides_shorter,
    RETENTION_POLICIES.c.allow_general_answers,
).where(RETENTION_POLICIES.c.role.in_(bindparam("policy_roles", expanding=True)))


@dataclass(frozen=True)
class ChatPolicy:
    questions_per_minute: int
    max_answer_tokens: int
    allow_general_answers: bool
    retention_days: int

    @property
    def zero_retention(self) -> bool:
        return self.retention_days == 0


def _most_generous(per_role: dict[str, int], roles: frozenset[str], default: int) -> int:
    values = [per_role[role] for role in roles if role in per_role]
    return max(values) if values else default


def chat_policy_in_unit(session: Session, settings: Settings, principal: Principal) -> ChatPolicy:
    """What chat allows this person (their roles' policies, one query); `chat_policy` for an async session."""
    roles = principal.roles
    # One query for the role policies: they decide both general answers and retention.
    policies = (
        {p.role: p for p in session.execute(_ROLE_POLICIES, {"policy_roles": sorted(roles)})}
        if roles
        else {}
    )
    general = bool(roles & set(settings.chat_general_answer_roles)) or any(
        p.allow_general_answers for p in policies.values()
    )
    return ChatPolicy(
        questions_per_minute=_most_generous(
            settings.chat_role_questions_per_minute, roles, settings.chat_questions_per_minute
        ),
        max_answer_tokens=_most_generous(settings.chat_role_max_answer_tokens, roles, settings.llm_max_tokens),
        allow_general_answers=general,
        retention_days=decide_retention(policies, sorted(roles), settings.default_retention_days).days,
    )


chat_policy = on_async_session(chat_policy_in_unit)
