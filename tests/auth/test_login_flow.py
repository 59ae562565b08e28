"""Sign-in -> page -> sign-out round trips through real oidc-provider-mock processes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.db.models import AuditEvent, User, UserSession
from tests.support.auth import AuthActions, app_db


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[Any]:
    app = create_app(settings_factory(database_url=database_url, **sso_settings), configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client


async def _count(client: Any, model: Any) -> int:
    async with app_db(client.app) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_nurse_signs_in_sees_her_name_and_signs_out(client: Any, auth: AuthActions) -> None:
    done = await auth.login(client, person="nurse", next="/?tab=1")
    assert done.headers["location"] == "/?tab=1"
    cookie_header = ",".join(v for k, v in done.headers.multi_items() if k == "set-cookie")
    assert "enclave_session=" in cookie_header and "HttpOnly" in cookie_header
    assert "SameSite=Lax" in cookie_header or "samesite=lax" in cookie_header.lower()
    page = await client.get("/", headers={"accept": "text/html"})
    assert "Noah Nurse" in page.text and "Sign out" in page.text
    assert await _count(client, UserSession) == 1
    async with app_db(client.app) as session:
        user = (await session.execute(select(User))).scalar_one()
        assert {a.role for a in user.roles} == {"nurse", "staff"}
        stored = (await session.execute(select(UserSession))).scalar_one()
        # Only a hash of the id is kept.
        assert stored.id_hash == hashlib.sha256(client.cookies["enclave_session"].encode()).hexdigest()

    out = await auth.logout(client)
    # The provider offers end_session_endpoint: Enclave signs out there too.
    assert out.headers["location"].startswith(auth.idps["staff"].base_url + "/oauth2/end_session?")
    assert "id_token_hint=" in out.headers["location"]
    assert await _count(client, UserSession) == 0
    page = await client.get("/", headers={"accept": "text/html"})
    assert "Noah Nurse" not in page.text and 'href="/auth/login"' in page.text


async def test_authorize_request_carries_pkce_s256_state_and_nonce(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="teacher")
    query = parse_qs(urlsplit(auth.last_authorize_url or "").query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43  # base64url of a sha256, unpadded
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert query["response_type"] == ["code"]
    assert "openid" in query["scope"][0].split()
    assert base64.urlsafe_b64decode(query["code_challenge"][0] + "=")  # well-formed


async def test_sign_in_rotates_the_session_id(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="teacher")
    first = client.cookies["enclave_session"]
    await auth.login(client, person="teacher")
    second = client.cookies["enclave_session"]
    assert first != second
    assert await _count(client, UserSession) == 1  # the old session is gone, not just forgotten


async def test_login_page_goes_straight_to_the_only_provider(client: Any) -> None:
    response = await client.get("/auth/login", follow_redirects=False)
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith("/auth/login/staff")


async def test_logout_without_csrf_token_is_refused_and_keeps_the_session(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="nurse")
    response = await client.post("/auth/logout", follow_redirects=False)
    assert response.status_code == 403
    assert await _count(client, UserSession) == 1


async def test_login_and_logout_are_audited(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="admin")
    await auth.logout(client)
    async with app_db(client.app) as session:
        actions = list((await session.execute(select(AuditEvent.action).order_by(AuditEvent.seq))).scalars())
    assert actions[-2:] == ["auth.login", "auth.logout"]
