"""The signed-in person as every request sees them: identity, roles and session, built from the server session."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    user_id: str
    display_name: str
    email: str | None
    roles: frozenset[str]
    session_hash: str  # sha256 of the session id: safe to log and audit
    provider: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles
