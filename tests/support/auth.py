"""Sign in through the REAL identity provider in tests: `AuthActions` and the provider settings to use.

How other areas use it (the fixtures come from tests/support/auth_fixtures.py, loaded by tests/conftest.py):

    from litestar.testing import AsyncTestClient
    from portal.app import create_app

    async def test_nurse_sees_clinical(settings_factory, database_url, sso_settings, auth):
        app = create_app(settings_factory(database_url=database_url, **sso_settings), configure_logs=False)
        async with AsyncTestClient(app=app) as client:
            await auth.login(client, person="nurse")                 # teacher | nurse | admin (sample people)
            await auth.login(client, groups=["teachers"])            # a fresh person with these groups
            await auth.login(client, sub="x1", claims={"email": "x1@example.org", "roles": ["Clinician"]})
            headers = await auth.csrf_headers(client)                # for POST/PUT/DELETE: {"x-csrftoken": ...}
            await client.post("/chat", data={...}, headers=headers)
            await auth.logout(client)

`auth.login` inserts the sample role rules (teachers->teacher, nurses->nurse, staff->staff,
enclave-admins->admin, suspended->deny) when the rules table is empty, so the sample people get their roles
(not when the settings carry `role_rules`: the app installs those itself); pass `seed_rules=False` to test
with rules you insert. It asserts the sign-in worked; use `attempt_login` to get
the raw callback response instead (refusals, errors).

The login is the full authorization-code flow: Enclave's /auth/login/<provider> -> the provider's authorize
endpoint (a real HTTP POST to the oidc-provider-mock process, choosing the person) -> Enclave's callback.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.embedded.idp import SAMPLE_PEOPLE, IdPProcess
from portal.settings import OIDCProviderSettings

CSRF_COOKIES = ("csrftoken", "__Host-csrftoken")
SESSION_COOKIES = ("enclave_session", "__Host-enclave_session")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provider_settings(name: str, idp: IdPProcess, *, label: str | None = None, **extra: Any) -> OIDCProviderSettings:
    """Settings for one provider backed by a running IdP process (any client id works: registration is off)."""
    values: dict[str, Any] = {
        "name": name,
        "label": label or f"{name.title()} sign-in",
        "discovery_url": idp.discovery_url,
        "client_id": f"enclave-{name}",
        "client_secret": "test-secret",
    }
    values.update(extra)
    return OIDCProviderSettings(**values)


@asynccontextmanager
async def app_db(app: Litestar) -> AsyncIterator[AsyncSession]:
    """A session on the app's database from the TEST's event loop, through an engine of its own.

    The app's engine belongs to the app's loop (the test client runs it in another thread, with workers using
    the same pool); sharing its pool across loops can hang. Commits on success.
    """
    from portal.db.engine import make_engine, make_session_factory, transaction

    engine = make_engine(app.state.runtime.settings.resolved_database_url)
    try:
        async with transaction(make_session_factory(engine)) as session:
            yield session
    finally:
        await engine.dispose()


async def ensure_sample_role_rules(app: Litestar) -> None:
    from portal.db.models import RoleMappingRule
    from portal.seed import SAMPLE_ROLE_RULES

    if app.state.runtime.settings.role_rules:
        return  # the app installs its configured ENCLAVE_ROLE_RULES into the empty table itself
    async with app_db(app) as session:
        if (await session.execute(select(RoleMappingRule.id).limit(1))).first():
            return
        for position, (claim, match, value, role, effect) in enumerate(SAMPLE_ROLE_RULES):
            session.add(RoleMappingRule(position=position, claim=claim, match=match, value=value, role=role, effect=effect))


class AuthActions:
    """Signs a test client in and out through a real OIDC provider process."""

    def __init__(self, idps: dict[str, IdPProcess], default_provider: str) -> None:
        self.idps = idps
        self.default_provider = default_provider
        self.last_authorize_url: str | None = None
        self.last_callback_url: str | None = None

    def person_claims(
        self,
        person: str | None,
        sub: str | None,
        claims: dict[str, Any] | None,
        groups: list[str] | None,
    ) -> tuple[str, dict[str, Any]]:
        if person is not None:
            sample = SAMPLE_PEOPLE[person]
            sub, merged = sample.sub, sample.claims()
        else:
            sub = sub or f"person-{uuid.uuid4().hex[:10]}"
            merged = {"email": f"{sub}@example.org", "name": sub.replace("-", " ").title()}
        if claims:
            merged.update(claims)
        if groups is not None:
            merged["groups"] = groups
        return sub, merged

    async def attempt_login(
        self,
        client: Any,
        person: str | None = None,
        *,
        sub: str | None = None,
        claims: dict[str, Any] | None = None,
        groups: list[str] | None = None,
        provider: str | None = None,
        next: str = "/",
        seed_rules: bool = True,
    ) -> httpx.Response:
        """The whole flow; returns Enclave's answer to the callback (a redirect when signed in)."""
        if seed_rules:
            await ensure_sample_role_rules(client.app)
        provider = provider or self.default_provider
        idp = self.idps[provider]
        sub, person_claims = self.person_claims(person, sub, claims, groups)
        idp.put_user(sub, person_claims)
        start = await client.get(f"/auth/login/{provider}", params={"next": next}, follow_redirects=False)
        assert start.status_code in (302, 303), f"/auth/login/{provider} answered {start.status_code}: {start.text[:300]}"
        self.last_authorize_url = start.headers["location"]
        async with httpx.AsyncClient(timeout=10) as browser:
            chosen = await browser.post(self.last_authorize_url, data={"sub": sub})
        assert chosen.status_code in (302, 303), f"the provider answered {chosen.status_code}: {chosen.text[:300]}"
        self.last_callback_url = chosen.headers["location"]
        callback = urlsplit(self.last_callback_url)
        return await client.get(f"{callback.path}?{callback.query}", follow_redirects=False)

    async def login(self, client: Any, person: str | None = None, **kwargs: Any) -> httpx.Response:
        response = await self.attempt_login(client, person, **kwargs)
        assert response.status_code in (302, 303), (
            f"sign-in did not succeed ({response.status_code}): {response.text[:400]}"
        )
        assert any(name in client.cookies for name in SESSION_COOKIES), "no session cookie after sign-in"
        return response

    async def csrf_headers(self, client: Any) -> dict[str, str]:
        for name in CSRF_COOKIES:
            if name in client.cookies:
                return {"x-csrftoken": client.cookies[name]}
        await client.get("/", headers={"accept": "text/html"})
        for name in CSRF_COOKIES:
            if name in client.cookies:
                return {"x-csrftoken": client.cookies[name]}
        raise AssertionError("the app set no CSRF cookie")

    async def logout(self, client: Any) -> httpx.Response:
        headers = await self.csrf_headers(client)
        response = await client.post("/auth/logout", headers=headers, follow_redirects=False)
        assert response.status_code == 303, f"sign-out answered {response.status_code}: {response.text[:300]}"
        return response
