"""Roles from the identity provider at sign-in: JIT creation, refusal, deny rules, re-evaluation, two providers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.db.models import AuditEvent, User, UserSession
from tests.support.auth import AuthActions, app_db


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings_two: dict[str, Any]) -> AsyncIterator[Any]:
    settings = settings_factory(database_url=database_url, access_contact="the Enclave desk (ext. 4242)", **sso_settings_two)
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client


async def _users(client: Any) -> list[User]:
    async with app_db(client.app) as session:
        return list((await session.execute(select(User).order_by(User.created_at))).scalars())


async def _roles(client: Any, sub: str) -> set[str]:
    async with app_db(client.app) as session:
        user = (await session.execute(select(User).where(User.subject == sub))).scalar_one()
        return {a.role for a in user.roles}


async def test_first_sign_in_creates_the_person(client: Any, auth_two: AuthActions) -> None:
    await auth_two.login(client, sub="jit-1", claims={"email": "jit-1@example.org", "name": "Jo Jit"}, groups=["teachers"])
    [user] = await _users(client)
    assert (user.subject, user.email, user.display_name, user.provider, user.status) == (
        "jit-1", "jit-1@example.org", "Jo Jit", "staff", "active"
    )
    assert user.issuer == auth_two.idps["staff"].base_url
    assert user.last_login_at is not None and user.last_claims and user.last_claims["groups"] == ["teachers"]
    assert "nonce" not in user.last_claims
    assert await _roles(client, "jit-1") == {"teacher"}


async def test_no_role_is_refused_with_whom_to_contact_and_audited(client: Any, auth_two: AuthActions) -> None:
    response = await auth_two.attempt_login(client, sub="nobody-1", groups=["parents"])
    assert response.status_code == 403
    assert "the Enclave desk (ext. 4242)" in response.text and "Traceback" not in response.text
    assert await _users(client) == []
    async with app_db(client.app) as session:
        assert (await session.execute(select(func.count()).select_from(UserSession))).scalar_one() == 0
        event = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))).scalar_one()
    assert (event.action, event.outcome, event.detail["reason"], event.detail["subject"]) == (
        "auth.login_refused", "denied", "no_role", "nobody-1"
    )


async def test_deny_rule_wins(client: Any, auth_two: AuthActions) -> None:
    response = await auth_two.attempt_login(client, sub="sus-1", groups=["teachers", "staff", "suspended"])
    assert response.status_code == 403 and "do not allow you" in response.text
    assert await _users(client) == []


async def test_roles_are_re_evaluated_at_every_sign_in(client: Any, auth_two: AuthActions) -> None:
    await auth_two.login(client, sub="mover-1", groups=["teachers", "staff"])
    assert await _roles(client, "mover-1") == {"teacher", "staff"}
    await auth_two.logout(client)
    await auth_two.login(client, sub="mover-1", groups=["nurses"])
    assert await _roles(client, "mover-1") == {"nurse"}
    page = await client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200
    # Losing every group: refused at the next sign-in, and the old roles are gone.
    await auth_two.logout(client)
    refused = await auth_two.attempt_login(client, sub="mover-1", groups=[])
    assert refused.status_code == 403
    assert await _roles(client, "mover-1") == set()
    assert len(await _users(client)) == 1


async def test_two_providers_round_trip(client: Any, auth_two: AuthActions) -> None:
    page = await client.get("/auth/login", headers={"accept": "text/html"})
    assert "Staff" in page.text and "Students" in page.text
    for provider, person in (("staff", "nurse"), ("students", "teacher")):
        done = await auth_two.login(client, person=person, provider=provider, next="/auth/signed-out")
        assert done.headers["location"] == "/auth/signed-out"
        home = await client.get("/", headers={"accept": "text/html"})
        assert ("Noah Nurse" if person == "nurse" else "Tara Teacher") in home.text
        out = await auth_two.logout(client)
        assert out.headers["location"].startswith(auth_two.idps[provider].base_url)
        assert "Sign out" not in (await client.get("/", headers={"accept": "text/html"})).text
    users = await _users(client)
    assert {(u.provider, u.issuer) for u in users} == {
        ("staff", auth_two.idps["staff"].base_url), ("students", auth_two.idps["students"].base_url)
    }


async def test_mapping_view_is_for_admins_only(client: Any, auth_two: AuthActions) -> None:
    await auth_two.login(client, person="nurse")
    denied = await client.get("/auth/mapping", headers={"accept": "text/html"})
    assert denied.status_code == 403
    await auth_two.login(client, person="admin")
    page = await client.get("/auth/mapping", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "enclave-admins" in page.text and "suspended" in page.text
    await auth_two.logout(client)
    assert (await client.get("/auth/mapping", headers={"accept": "text/html"})).status_code == 401


async def test_configured_rules_bootstrap_an_empty_rules_table(
    settings_factory: Any, database_url: str, sso_settings: dict[str, Any], auth: AuthActions
) -> None:
    """Production (no sample data): ENCLAVE_ROLE_RULES let the first administrator in; admins own them after."""
    from portal.db.models import RoleMappingRule
    from portal.settings import RoleRuleSettings

    rules = [
        RoleRuleSettings(claim="roles", value="Enclave.Admin", role="admin", provider="staff"),
        RoleRuleSettings(claim="email", match="email_domain", value="district.example.org", role="staff"),
    ]
    app = create_app(settings_factory(database_url=database_url, role_rules=rules, **sso_settings), configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        await auth.login(client, sub="boot-admin", claims={"email": "it@district.example.org", "roles": ["Enclave.Admin"]}, seed_rules=False)
        assert await _roles(client, "boot-admin") == {"admin", "staff"}
        async with app_db(client.app) as session:
            stored = list((await session.execute(select(RoleMappingRule).order_by(RoleMappingRule.position))).scalars())
        assert [(r.claim, r.value, r.provider) for r in stored] == [
            ("roles", "Enclave.Admin", "staff"), ("email", "district.example.org", None)
        ]
        refused = await auth.attempt_login(client, sub="outsider", claims={"email": "x@elsewhere.org"}, seed_rules=False)
        assert refused.status_code == 403
