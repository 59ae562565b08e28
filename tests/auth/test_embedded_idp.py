"""The quick start's embedded identity provider: a registered client, sample people, a real OIDC sign-in."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from portal.app import create_app
from portal.embedded.idp import SAMPLE_PEOPLE, IdPProcess, embedded_idp
from tests.support.auth import AuthActions, free_port


async def test_newcomer_signs_in_as_each_sample_person(settings_factory: Any, database_url: str) -> None:
    port = free_port()
    base = settings_factory(database_url=database_url, embedded_idp=True, embedded_idp_port=port)
    assert base.uses_embedded_idp
    with embedded_idp(base) as settings:
        [provider] = settings.oidc_providers
        assert provider.name == "local" and provider.client_secret is not None  # registered, not "any client"
        app = create_app(settings, configure_logs=False)
        auth = AuthActions({"local": IdPProcess(port)}, default_provider="local")
        expected = {"teacher": "teacher", "nurse": "nurse", "admin": "admin"}
        async with AsyncTestClient(app=app) as client:
            for person, role in expected.items():
                await auth.login(client, person=person)
                page = await client.get("/", headers={"accept": "text/html"})
                assert SAMPLE_PEOPLE[person].name in page.text
                mapping = await client.get("/auth/mapping", headers={"accept": "text/html"})
                assert mapping.status_code == (200 if role == "admin" else 403)
                await auth.logout(client)


async def test_https_deployment_uses_a_host_prefixed_secure_cookie(
    settings_factory: Any, database_url: str, sso_settings: dict[str, Any], auth: AuthActions
) -> None:
    settings = settings_factory(database_url=database_url, public_url="https://enclave.example.org", **sso_settings)
    app = create_app(settings, configure_logs=False)
    # A Secure cookie only travels over https, as in a real deployment.
    async with AsyncTestClient(app=app, base_url="https://testserver.local") as client:
        response = await auth.attempt_login(client, person="nurse")
        assert "Noah Nurse" in (await client.get("/", headers={"accept": "text/html"})).text
    assert response.status_code == 302
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    [session_cookie] = [c for c in cookies if c.startswith("__Host-enclave_session=")]
    lowered = session_cookie.lower()
    assert "secure" in lowered and "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
    assert "domain=" not in lowered
