"""map_claims_to_roles: groups, roles, email domain and custom claims; deny wins."""

from __future__ import annotations

from portal.auth.mapping import claim_values, map_claims_to_roles
from portal.settings import RoleRuleSettings


def rule(claim: str, value: str, role: str, match: str = "equals", effect: str = "allow", provider: str | None = None) -> RoleRuleSettings:
    return RoleRuleSettings(claim=claim, value=value, role=role, match=match, effect=effect, provider=provider)  # type: ignore[arg-type]


RULES = [
    rule("groups", "teachers", "teacher"),
    rule("groups", "5f1c-object-id", "nurse"),  # Entra sends group object ids
    rule("roles", "Enclave.Admin", "admin"),
    rule("email", "district.example.org", "staff", match="email_domain"),
    rule("department", "Oncology", "nurse"),
    rule("realm_access.roles", "clinician", "nurse"),
    rule("groups", "contractors", "staff", effect="deny"),
    rule("groups", "suspended", "*", effect="deny"),
    rule("hd", "students.example.org", "student", provider="google"),
]


def test_each_kind_of_claim_maps() -> None:
    assert map_claims_to_roles({"groups": ["teachers"]}, RULES, "staff").roles == {"teacher"}
    assert map_claims_to_roles({"groups": ["5f1c-object-id"]}, RULES, "entra").roles == {"nurse"}
    assert map_claims_to_roles({"roles": ["Enclave.Admin"]}, RULES, None).roles == {"admin"}
    assert map_claims_to_roles({"email": "Pat@District.Example.org"}, RULES, None).roles == {"staff"}
    assert map_claims_to_roles({"department": "Oncology"}, RULES, None).roles == {"nurse"}
    assert map_claims_to_roles({"realm_access": {"roles": ["clinician"]}}, RULES, None).roles == {"nurse"}


def test_no_match_means_no_role() -> None:
    result = map_claims_to_roles({"groups": ["parents"], "email": "a@elsewhere.org"}, RULES, "staff")
    assert result.roles == frozenset() and result.refused and not result.denied
    assert map_claims_to_roles({"email": "x@notdistrict.example.org.evil"}, RULES, None).roles == frozenset()


def test_deny_on_a_role_removes_only_that_role() -> None:
    result = map_claims_to_roles(
        {"groups": ["teachers", "contractors"], "email": "c@district.example.org"}, RULES, None
    )
    assert result.roles == {"teacher"} and not result.denied
    assert [m.role for m in result.matched_rules] == ["teacher", "staff", "staff"]


def test_deny_all_wins_over_every_allow() -> None:
    result = map_claims_to_roles({"groups": ["teachers", "suspended"], "roles": ["Enclave.Admin"]}, RULES, None)
    assert result.denied and result.roles == frozenset() and result.refused


def test_provider_restricted_rules_apply_to_that_provider_only() -> None:
    claims = {"hd": "students.example.org"}
    assert map_claims_to_roles(claims, RULES, "google").roles == {"student"}
    assert map_claims_to_roles(claims, RULES, "staff").roles == frozenset()


def test_contains_and_scalar_claims() -> None:
    rules = [rule("title", "Nurse", "nurse", match="contains"), rule("email_verified", "true", "staff")]
    assert map_claims_to_roles({"title": "Charge Nurse", "email_verified": True}, rules, None).roles == {"nurse", "staff"}
    assert claim_values({"n": 3}, "n") == ["3"] and claim_values({}, "a.b") == []
