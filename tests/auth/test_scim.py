"""SCIM 2.0 provisioning as Entra ID and Okta drive it; deactivation ends sessions at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.db.models import AuditEvent, ScimGroupMember, User, UserSession
from tests.support.auth import AuthActions, app_db, ensure_sample_role_rules

TOKEN = "scim-test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/scim+json"}


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[Any]:
    app = create_app(settings_factory(database_url=database_url, scim_token=TOKEN, **sso_settings), configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        await ensure_sample_role_rules(app)
        yield client


async def _count(client: Any, model: Any) -> int:
    async with app_db(client.app) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _create_user(client: Any, user_name: str, **extra: Any) -> dict[str, Any]:
    body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name,
            "name": {"givenName": "Pat", "familyName": "Doe"}, "emails": [{"value": user_name, "primary": True}],
            "active": True, **extra}
    response = await client.post("/scim/v2/Users", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    return response.json()


async def test_bad_or_missing_token_is_refused_with_a_scim_error(client: Any) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        response = await client.post("/scim/v2/Users", json={"userName": "x@example.org"}, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"] and body["status"] == "401"
    assert await _count(client, User) == 0


async def test_create_get_list_and_filter_users(client: Any) -> None:
    created = await _create_user(client, "pat.doe@example.org", externalId="ext-1")
    assert created["active"] is True and created["displayName"] == "Pat Doe"
    fetched = (await client.get(f"/scim/v2/Users/{created['id']}", headers=AUTH)).json()
    assert fetched["userName"] == "pat.doe@example.org" and fetched["externalId"] == "ext-1"
    await _create_user(client, "sam@example.org")
    found = (await client.get('/scim/v2/Users?filter=userName eq "pat.doe@example.org"', headers=AUTH)).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == created["id"]
    none = (await client.get('/scim/v2/Users?filter=userName eq "nobody@example.org"', headers=AUTH)).json()
    assert none["totalResults"] == 0 and none["Resources"] == []
    everyone = (await client.get("/scim/v2/Users?startIndex=1&count=1", headers=AUTH)).json()
    assert everyone["totalResults"] == 2 and everyone["itemsPerPage"] == 1


async def test_bad_requests_get_scim_errors_and_change_nothing(client: Any) -> None:
    await _create_user(client, "dup@example.org")
    dup = await client.post("/scim/v2/Users", json={"userName": "DUP@example.org"}, headers=AUTH)
    assert dup.status_code == 409 and dup.json()["scimType"] == "uniqueness"
    missing = await client.post("/scim/v2/Users", json={"displayName": "No Name"}, headers=AUTH)
    assert missing.status_code == 400 and missing.json()["scimType"] == "invalidValue"
    garbage = await client.post("/scim/v2/Users", content=b"{not json", headers=AUTH)
    assert garbage.status_code == 400 and garbage.json()["scimType"] == "invalidSyntax"
    bad_filter = await client.get('/scim/v2/Users?filter=userName sw "d"', headers=AUTH)
    assert bad_filter.status_code == 400 and bad_filter.json()["scimType"] == "invalidFilter"
    unknown = await client.get("/scim/v2/Users/nope", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["status"] == "404"
    assert await _count(client, User) == 1


async def test_deactivation_ends_every_session_at_once(client: Any, auth: AuthActions) -> None:
    scim_user = await _create_user(client, "noah.nurse@example.org")
    await auth.login(client, person="nurse")
    # Linked at first login: the SCIM-provisioned person, not a second one.
    assert await _count(client, User) == 1
    # A second browser: a second session for the same person.
    first_cookie = client.cookies["enclave_session"]
    client.cookies.clear()
    await auth.login(client, person="nurse")
    assert await _count(client, UserSession) == 2
    client.cookies.clear()
    client.cookies.set("enclave_session", first_cookie, domain="testserver.local")
    patch = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}  # Entra's spelling
    response = await client.patch(f"/scim/v2/Users/{scim_user['id']}", json=patch, headers=AUTH)
    assert response.status_code == 200 and response.json()["active"] is False
    assert await _count(client, UserSession) == 0
    page = await client.get("/", headers={"accept": "text/html"})
    assert "Noah Nurse" not in page.text
    async with app_db(client.app) as session:
        actions = list((await session.execute(select(AuditEvent.action))).scalars())
    assert "scim.user_deactivated" in actions
    refused = await auth.attempt_login(client, person="nurse")
    assert refused.status_code == 403 and await _count(client, UserSession) == 0
    # Okta's spelling reactivates.
    okta = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "value": {"active": True}}]}
    assert (await client.patch(f"/scim/v2/Users/{scim_user['id']}", json=okta, headers=AUTH)).json()["active"] is True
    await auth.login(client, person="nurse")


async def test_groups_give_roles_before_first_login_and_membership_changes_follow(client: Any, auth: AuthActions) -> None:
    user = await _create_user(client, "lee@example.org")
    group = await client.post("/scim/v2/Groups", json={"displayName": "teachers", "members": [{"value": user["id"]}]}, headers=AUTH)
    assert group.status_code == 201
    gid = group.json()["id"]
    async with app_db(client.app) as session:
        db_user = await session.get(User, user["id"])
        assert db_user is not None and {a.role for a in db_user.roles} == {"teacher"}
    listed = (await client.get('/scim/v2/Groups?filter=displayName eq "teachers"', headers=AUTH)).json()
    assert listed["totalResults"] == 1 and listed["Resources"][0]["members"][0]["value"] == user["id"]

    # The person signs in with no groups in the token: the SCIM group still counts as a `groups` claim.
    await auth.login(client, sub="lee-sub", claims={"email": "lee@example.org"}, groups=[])
    assert await _count(client, User) == 1

    remove = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
              "Operations": [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}]}
    assert (await client.patch(f"/scim/v2/Groups/{gid}", json=remove, headers=AUTH)).status_code == 200
    async with app_db(client.app) as session:
        assert (await session.execute(select(func.count()).select_from(ScimGroupMember))).scalar_one() == 0
        db_user = await session.get(User, user["id"])
        assert db_user is not None and {a.role for a in db_user.roles} == set()
    add = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "add", "path": "members", "value": [{"value": user["id"]}]}]}
    assert len((await client.patch(f"/scim/v2/Groups/{gid}", json=add, headers=AUTH)).json()["members"]) == 1
    bad = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
           "Operations": [{"op": "add", "path": "members", "value": [{"value": "no-such-user"}]}]}
    assert (await client.patch(f"/scim/v2/Groups/{gid}", json=bad, headers=AUTH)).status_code == 400
    assert await _count(client, ScimGroupMember) == 1
    assert (await client.delete(f"/scim/v2/Groups/{gid}", headers=AUTH)).status_code == 204
    assert await _count(client, ScimGroupMember) == 0


async def test_put_and_delete_user(client: Any, auth: AuthActions) -> None:
    user = await _create_user(client, "tara.teacher@example.org")
    replaced = await client.put(
        f"/scim/v2/Users/{user['id']}", json={"userName": "tara.teacher@example.org", "displayName": "Tara T.", "active": True},
        headers=AUTH,
    )
    assert replaced.status_code == 200 and replaced.json()["displayName"] == "Tara T."
    await auth.login(client, person="teacher")
    assert await _count(client, UserSession) == 1
    assert (await client.delete(f"/scim/v2/Users/{user['id']}", headers=AUTH)).status_code == 204
    assert await _count(client, User) == 0 and await _count(client, UserSession) == 0
    assert (await client.get(f"/scim/v2/Users/{user['id']}", headers=AUTH)).status_code == 404
