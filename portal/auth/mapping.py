"""Claims -> Enclave roles: the mapping rules an identity provider's groups, roles, email and custom claims go through.

Pure functions on plain data: the login, SCIM provisioning and the admin rule preview all use the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

DENY_ALL = "*"


class RuleLike(Protocol):
    """What a rule needs to be applied: a RoleMappingRule row, a RoleRuleSettings, or any object with these."""

    @property
    def claim(self) -> str: ...
    @property
    def match(self) -> str: ...  # equals | contains | email_domain
    @property
    def value(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def effect(self) -> str: ...  # allow | deny
    @property
    def provider(self) -> str | None: ...


@dataclass(frozen=True)
class MatchedRule:
    claim: str
    match: str
    value: str
    role: str
    effect: str
    provider: str | None
    matched_value: str  # the claim value that made the rule apply


@dataclass(frozen=True)
class MappingResult:
    roles: frozenset[str]
    denied: bool  # a deny rule on "*" applied: the person is refused whatever else they hold
    matched_rules: tuple[MatchedRule, ...]

    @property
    def refused(self) -> bool:
        return self.denied or not self.roles


def claim_values(claims: Mapping[str, Any], name: str) -> list[str]:
    """All string values of a claim; dotted names reach into objects (Keycloak's `realm_access.roles`)."""
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    if value is None:
        return []
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value if v is not None and not isinstance(v, dict | list)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, str | int | float):
        return [str(value)]
    return []


def _matching_value(rule: RuleLike, values: Iterable[str]) -> str | None:
    wanted = rule.value
    for candidate in values:
        if rule.match == "equals" and candidate == wanted:
            return candidate
        if rule.match == "contains" and wanted in candidate:
            return candidate
        # Domains are case-insensitive; "@example.org" and "example.org" both work.
        if rule.match == "email_domain" and candidate.lower().endswith("@" + wanted.lower().lstrip("@")):
            return candidate
    return None


def map_claims_to_roles(
    claims: Mapping[str, Any], rules: Sequence[RuleLike], provider: str | None
) -> MappingResult:
    """Apply every rule (in order) to the claims. Deny rules win: over the role they name, or over all ("*")."""
    allowed: set[str] = set()
    denied_roles: set[str] = set()
    deny_all = False
    matched: list[MatchedRule] = []
    for rule in rules:
        if rule.provider and provider is not None and rule.provider != provider:
            continue
        if rule.provider and provider is None:
            continue
        hit = _matching_value(rule, claim_values(claims, rule.claim))
        if hit is None:
            continue
        matched.append(
            MatchedRule(rule.claim, rule.match, rule.value, rule.role, rule.effect, rule.provider, hit)
        )
        if rule.effect == "deny":
            if rule.role == DENY_ALL:
                deny_all = True
            else:
                denied_roles.add(rule.role)
        else:
            allowed.add(rule.role)
    roles = frozenset() if deny_all else frozenset(allowed - denied_roles)
    return MappingResult(roles=roles, denied=deny_all, matched_rules=tuple(matched))
