"""Bad sign-ins get a clear page, create no person and no session, and are audited."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy import func, select, update

from portal.app import create_app
from portal.clock import MovableClock
from portal.db.models import AuditEvent, User, UserSession
from portal.embedded.idp import IdPProcess
from portal.settings import OIDCProviderSettings
from tests.support.auth import AuthActions, app_db, ensure_sample_role_rules, free_port, provider_settings
from tests.support.token_idp import TokenIdPState, run_token_idp


@pytest.fixture(scope="module")
def token_idp() -> Iterator[TokenIdPState]:
    with run_token_idp() as state:
        yield state


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def client(
    settings_factory: Any, database_url: str, oidc_idp: IdPProcess, token_idp: TokenIdPState, clock: MovableClock
) -> AsyncIterator[Any]:
    token_idp.mode = "good"
    token_idp.authorize_requests.clear()
    token_idp.token_requests.clear()
    providers = [
        provider_settings("staff", oidc_idp),
        OIDCProviderSettings(
            name="ctl", label="Controlled", client_id="enclave-ctl", client_secret=None,  # public client: PKCE only
            discovery_url=token_idp.base_url + "/.well-known/openid-configuration",
        ),
        OIDCProviderSettings(
            name="down", label="Unreachable", client_id="x", client_secret=SecretStr("y"),
            discovery_url=f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration",
        ),
    ]
    settings = settings_factory(
        database_url=database_url, oidc_providers=providers, embedded_idp=False, clock=clock,
        access_contact="the Enclave desk (ext. 4242)",
    )
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client


async def _counts(client: Any) -> tuple[int, int]:
    async with app_db(client.app) as session:
        users = (await session.execute(select(func.count()).select_from(User))).scalar_one()
        sessions = (await session.execute(select(func.count()).select_from(UserSession))).scalar_one()
    return int(users), int(sessions)


async def _last_audit(client: Any) -> AuditEvent:
    async with app_db(client.app) as session:
        return (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))).scalar_one()


async def _ctl_login(client: Any) -> httpx.Response:
    await ensure_sample_role_rules(client.app)
    await client.get("/", headers={"accept": "text/html"})
    start = await client.get("/auth/login/ctl", follow_redirects=False)
    assert start.status_code in (302, 303)
    async with httpx.AsyncClient() as browser:
        at_provider = await browser.get(start.headers["location"], follow_redirects=False)
    callback = urlsplit(at_provider.headers["location"])
    return await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"}, follow_redirects=False)


def _assert_clear_page(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert words in response.text
    assert "Traceback" not in response.text and "File \"" not in response.text


async def _assert_refused_and_audited(client: Any, reason: str) -> None:
    assert await _counts(client) == (0, 0)
    event = await _last_audit(client)
    assert (event.action, event.outcome, event.detail["reason"]) == ("auth.login_failed", "denied", reason)


async def test_public_client_with_pkce_signs_in_and_the_verifier_matches_the_challenge(
    client: Any, token_idp: TokenIdPState
) -> None:
    response = await _ctl_login(client)
    assert response.status_code == 302
    challenge = token_idp.authorize_requests[-1]
    sent = token_idp.token_requests[-1]
    assert challenge["code_challenge_method"] == "S256"
    digest = base64.urlsafe_b64encode(hashlib.sha256(sent["code_verifier"].encode()).digest()).rstrip(b"=").decode()
    assert digest == challenge["code_challenge"]
    assert sent["client_id"] == "enclave-ctl" and "client_secret" not in sent  # a public client sends no secret
    assert await _counts(client) == (1, 1)


async def test_missing_state(client: Any) -> None:
    response = await client.get("/auth/callback/staff?code=abc", headers={"accept": "text/html"})
    _assert_clear_page(response, 400, "incomplete")
    await _assert_refused_and_audited(client, "missing_state")


async def test_wrong_state(client: Any) -> None:
    response = await client.get("/auth/callback/staff?code=abc&state=made-up", headers={"accept": "text/html"})
    _assert_clear_page(response, 400, "expired or was already used")
    await _assert_refused_and_audited(client, "unknown_state")


async def test_replayed_callback_fails_and_changes_nothing(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="nurse")
    callback = urlsplit(auth.last_callback_url or "")
    before = await _counts(client)
    replay = await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"})
    _assert_clear_page(replay, 400, "already used")
    assert await _counts(client) == before == (1, 1)
    assert (await _last_audit(client)).detail["reason"] == "unknown_state"


@pytest.mark.parametrize(
    ("mode", "reason", "status"),
    [
        ("tampered", "bad_signature", 401),
        ("expired", "token_expired", 401),
        ("wrong_aud", "invalid_aud", 401),
        ("unknown_kid", "unknown_signing_key", 401),
        ("wrong_nonce", "invalid_nonce", 401),
        ("wrong_iss", "invalid_iss", 401),
        ("future_iat", "invalid_iat", 401),
        ("token_error", "code_exchange_failed", 401),
    ],
)
async def test_bad_id_tokens_are_refused(
    client: Any, token_idp: TokenIdPState, mode: str, reason: str, status: int
) -> None:
    token_idp.mode = mode
    response = await _ctl_login(client)
    _assert_clear_page(response, status, "sign")
    await _assert_refused_and_audited(client, reason)


async def test_rotated_signing_key_is_fetched_again(client: Any, token_idp: TokenIdPState) -> None:
    assert (await _ctl_login(client)).status_code == 302
    fetches = token_idp.jwks_fetches
    token_idp.rotate_key()
    await client.post("/auth/logout", headers={"x-csrftoken": client.cookies["csrftoken"]})
    assert (await _ctl_login(client)).status_code == 302
    assert token_idp.jwks_fetches == fetches + 1


async def test_unreachable_provider(client: Any) -> None:
    response = await client.get("/auth/login/down", headers={"accept": "text/html"}, follow_redirects=False)
    _assert_clear_page(response, 503, "could not be reached")
    await _assert_refused_and_audited(client, "provider_unreachable")


async def test_login_page_lists_every_provider(client: Any) -> None:
    page = await client.get("/auth/login", headers={"accept": "text/html"})
    assert page.status_code == 200
    for name in ("staff", "ctl", "down"):
        assert f'href="/auth/login/{name}?next=' in page.text


async def test_deactivated_mid_session_ends_the_session_at_once(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="teacher")
    async with app_db(client.app) as session:
        await session.execute(update(User).values(status="deactivated"))
    page = await client.get("/", headers={"accept": "text/html"})
    assert "Tara Teacher" not in page.text
    assert "enclave_session=" in page.headers.get("set-cookie", "") and "Max-Age=0" in page.headers["set-cookie"]
    assert (await _counts(client))[1] == 0
    event = await _last_audit(client)
    assert (event.action, event.outcome, event.detail["reason"]) == ("auth.session_ended", "denied", "user_deactivated")
    # And they cannot sign back in.
    again = await auth.attempt_login(client, person="teacher")
    assert again.status_code == 403 and "deactivated" in again.text
    assert (await _counts(client))[1] == 0


async def test_idle_timeout_ends_the_session(client: Any, auth: AuthActions, clock: MovableClock) -> None:
    await auth.login(client, person="nurse")
    clock.advance(timedelta(minutes=10))
    assert "Noah Nurse" in (await client.get("/", headers={"accept": "text/html"})).text  # still active: touched
    clock.advance(timedelta(minutes=14))
    assert "Noah Nurse" in (await client.get("/", headers={"accept": "text/html"})).text
    clock.advance(timedelta(minutes=16))
    assert "Noah Nurse" not in (await client.get("/", headers={"accept": "text/html"})).text
    assert (await _counts(client))[1] == 0
    event = await _last_audit(client)
    assert (event.action, event.detail["reason"]) == ("auth.session_expired", "idle_timeout")


async def test_absolute_lifetime_ends_even_an_active_session(client: Any, auth: AuthActions, clock: MovableClock) -> None:
    await auth.login(client, person="nurse")
    for _ in range(12 * 6):  # active every 10 minutes for 12 hours
        clock.advance(timedelta(minutes=10))
        await client.get("/auth/signed-out")
    assert "Noah Nurse" not in (await client.get("/", headers={"accept": "text/html"})).text
    assert (await _last_audit(client)).detail["reason"] == "absolute_lifetime"


async def test_person_declines_at_the_provider(client: Any, auth: AuthActions, oidc_idp: IdPProcess) -> None:
    await client.get("/", headers={"accept": "text/html"})
    start = await client.get("/auth/login/staff", follow_redirects=False)
    async with httpx.AsyncClient() as browser:
        declined = await browser.post(start.headers["location"], data={"action": "deny"})
    callback = urlsplit(declined.headers["location"])
    assert "error=access_denied" in callback.query
    response = await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"})
    _assert_clear_page(response, 403, "did not sign you in")
    await _assert_refused_and_audited(client, "provider_refused")


async def test_return_path_never_leaves_enclave(client: Any, auth: AuthActions) -> None:
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        done = await auth.login(client, person="nurse", next=evil)
        assert done.headers["location"] == "/"


async def test_made_up_session_cookie_is_ignored_and_cleared(client: Any) -> None:
    client.cookies.set("enclave_session", "made-up-value", domain="testserver.local")
    page = await client.get("/", headers={"accept": "text/html"})
    assert page.status_code == 200 and 'href="/auth/login"' in page.text
    assert "enclave_session=;" in page.headers.get("set-cookie", "") or "Max-Age=0" in page.headers.get("set-cookie", "")
    assert await _counts(client) == (0, 0)


async def test_callback_started_in_another_browser_is_refused(client: Any, auth: AuthActions, oidc_idp: IdPProcess) -> None:
    await client.get("/", headers={"accept": "text/html"})
    start = await client.get("/auth/login/staff", follow_redirects=False)
    async with httpx.AsyncClient() as browser:
        chosen = await browser.post(start.headers["location"], data={"sub": "noah.nurse@example.org"})
    callback = urlsplit(chosen.headers["location"])
    # The victim's browser (no login-binding cookie) is handed the attacker's callback link.
    client.cookies.delete("enclave_login")
    response = await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"})
    _assert_clear_page(response, 400, "another browser")
    await _assert_refused_and_audited(client, "browser_mismatch")


async def test_sign_in_left_too_long_at_the_provider_expires(client: Any, clock: MovableClock, oidc_idp: IdPProcess) -> None:
    await ensure_sample_role_rules(client.app)
    start = await client.get("/auth/login/staff", follow_redirects=False)
    async with httpx.AsyncClient() as browser:
        chosen = await browser.post(start.headers["location"], data={"sub": "noah.nurse@example.org"})
    clock.advance(timedelta(minutes=11))  # login state lives 10 minutes
    callback = urlsplit(chosen.headers["location"])
    response = await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"})
    _assert_clear_page(response, 400, "expired")
    await _assert_refused_and_audited(client, "unknown_state")
