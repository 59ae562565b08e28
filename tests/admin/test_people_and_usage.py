"""People (deactivation ends sessions at once), the role-mapping editor with preview, and the usage dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.app import create_app
from portal.audit import AuditContext, append_audit
from portal.db.engine import transaction
from portal.db.models import Citation, Conversation, Feedback, Message, User
from portal.runtime import Runtime
from tests.admin.helpers import SideView, audit_actions, make_collection, side_view
from tests.support.auth import AuthActions

HTML = {"accept": "text/html"}
JSON = {"accept": "application/json"}


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = settings_factory(database_url=database_url, usage_price_input_per_million=3.0,
                                usage_price_output_per_million=15.0, **sso_settings)
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def side(client: AsyncTestClient[Any], database_url: str) -> AsyncIterator[SideView]:
    runtime: Runtime = client.app.state.runtime
    view = side_view(runtime, database_url)
    yield view
    await view.close()


async def test_deactivating_a_person_ends_their_sessions_at_once(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await auth.login(client, person="nurse")
    assert (await client.get("/", headers=HTML)).text.count("Noah Nurse") >= 1
    nurse_cookies = dict(client.cookies)
    client.cookies.clear()
    await auth.login(client, person="admin")
    csrf = await auth.csrf_headers(client)
    listing = (await client.get("/admin/people", headers=JSON)).json()["people"]
    nurse = next(p for p in listing if p["email"] == "noah.nurse@example.org")
    assert "nurse" in nurse["roles"] and nurse["status"] == "active" and nurse["last_login_at"]
    page = await client.get("/admin/people", headers=HTML)
    assert page.status_code == 200 and "noah.nurse@example.org" in page.text and "Deactivate" in page.text

    done = await client.post(f"/admin/people/{nurse['id']}/deactivate", headers={**JSON, **csrf})
    assert done.status_code == 200 and done.json()["sessions_ended"] >= 1
    me = next(p for p in listing if p["email"] == "ada.admin@example.org")
    refused = await client.post(f"/admin/people/{me['id']}/deactivate", headers={**HTML, **csrf})
    assert refused.status_code == 409 and "cannot deactivate yourself" in refused.text

    admin_cookies = dict(client.cookies)
    client.cookies.clear()
    client.cookies.update(nurse_cookies)
    after = await client.get("/", headers=HTML)
    assert "Noah Nurse" not in after.text and 'href="/auth/login"' in after.text  # signed out at once
    client.cookies.clear()
    client.cookies.update(admin_cookies)
    async with side.db() as session:
        user = await session.get(User, nurse["id"])
    assert user is not None and user.status == "deactivated"
    actions = await audit_actions(side)  # type: ignore[arg-type]
    assert ("user.deactivate", "allowed") in actions and ("user.sessions_ended", "allowed") in actions


async def test_rules_are_edited_and_previewed(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await auth.login(client, person="admin")
    headers = {**HTML, **await auth.csrf_headers(client)}
    page = await client.get("/admin/people/rules", headers=HTML)
    assert page.status_code == 200 and "enclave-admins" in page.text
    added = await client.post("/admin/people/rules", headers=headers, follow_redirects=False,
                              data={"claim": "groups", "match": "equals", "value": "librarians", "effect": "allow", "role": "librarian"})
    assert added.status_code == 303
    bad = await client.post("/admin/people/rules", headers=headers,
                            data={"claim": "groups", "match": "regex", "value": "x", "effect": "allow", "role": "x"})
    assert bad.status_code == 400 and "equals, contains or email_domain" in bad.text
    preview = await client.post("/admin/people/rules/preview", headers=headers,
                                data={"claims": '{"groups": ["librarians", "staff"]}', "provider": ""})
    assert preview.status_code == 200 and "<strong>Roles:</strong> librarian, staff" in preview.text
    denied = await client.post("/admin/people/rules/preview", headers={**JSON, "x-csrftoken": headers["x-csrftoken"]},
                               data={"claims": '{"groups": ["nurses", "suspended"]}'})
    assert denied.json()["preview"] == {"roles": [], "refused": True, "denied": True}
    broken = await client.post("/admin/people/rules/preview", headers=headers, data={"claims": "{groups: nurses"})
    assert broken.status_code == 400 and "not valid JSON" in broken.text
    rules = (await client.get("/admin/people/rules", headers=JSON)).json()["rules"]
    librarian = next(r for r in rules if r["role"] == "librarian")
    gone = await client.post(f"/admin/people/rules/{librarian['id']}/delete", headers=headers, follow_redirects=False)
    assert gone.status_code == 303
    assert "librarian" not in {r["role"] for r in (await client.get("/admin/people/rules", headers=JSON)).json()["rules"]}
    assert ("role_rule.add", "allowed") in await audit_actions(side)  # type: ignore[arg-type]


async def _seed_usage(side: SideView) -> None:
    now = side.clock.now()
    collection_id = await make_collection(side, "Clinical policies", ["nurse"])
    async with transaction(side.db) as session:
        user = User(email="u@example.org", display_name="U")
        session.add(user)
        await session.flush()
        conversation = Conversation(user_id=user.id, created_at=now, updated_at=now)
        session.add(conversation)
        await session.flush()
        answers = []
        for day in (0, 0, 1):
            answer = Message(conversation_id=conversation.id, role="assistant", content="...", created_at=now - timedelta(days=day))
            session.add(answer)
            await session.flush()
            session.add(Citation(message_id=answer.id, ordinal=1, chunk_id="c", document_id="d", collection_id=collection_id, cited=True))
            answers.append(answer)
        session.add(Feedback(message_id=answers[0].id, user_id=user.id, rating=-1, comment="Cites the 2019 policy", created_at=now))
        nurse = AuditContext(user_id=user.id, roles=("nurse",))
        teacher = AuditContext(user_id=user.id, roles=("teacher", "staff"))
        for context, day in ((nurse, 0), (nurse, 0), (teacher, 1)):
            await append_audit(session, at=now - timedelta(days=day), action="chat.question", context=context)
            await append_audit(session, at=now - timedelta(days=day), action="chat.answer", context=context,
                               detail={"prompt_tokens": 1000, "completion_tokens": 200})


async def test_usage_dashboard_draws_svg_charts_from_the_audit_trail(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await _seed_usage(side)
    await auth.login(client, person="teacher")
    assert (await client.get("/admin/usage", headers=HTML)).status_code == 403
    await auth.logout(client)
    await auth.login(client, person="admin")
    data = (await client.get("/admin/usage?days=7", headers=JSON)).json()
    assert data["questions_total"] == 3
    assert sum(data["questions_by_role"]["nurse"]) == 2 and sum(data["questions_by_role"]["teacher"]) == 1
    assert data["collections"] == [{"name": "Clinical policies", "answers": 3}]
    assert (data["input_tokens"], data["output_tokens"], data["negative_feedback"]) == (3000, 600, 1)
    assert data["estimated_cost"] == pytest.approx((3000 * 3.0 + 600 * 15.0) / 1_000_000)
    page = await client.get("/admin/usage", headers=HTML)
    assert page.status_code == 200
    assert page.text.count('<svg class="chart"') == 3 and page.text.count('role="img"') >= 3
    assert "Cites the 2019 policy" in page.text and "<title id=\"questions-chart-title\">" in page.text
    async with side.db() as session:
        assert (await session.execute(select(Message.id))).first() is not None


async def test_a_non_admin_is_refused_people_actions_and_the_refusal_is_audited(
    client: AsyncTestClient[Any], side: SideView, auth: AuthActions
) -> None:
    await auth.login(client, person="admin")
    listing = (await client.get("/admin/people", headers=JSON)).json()["people"]
    admin_id = listing[0]["id"]
    await auth.logout(client)
    await auth.login(client, person="nurse")
    csrf = await auth.csrf_headers(client)
    assert (await client.get("/admin/people", headers=HTML)).status_code == 403
    refused = await client.post(f"/admin/people/{admin_id}/deactivate", headers={**HTML, **csrf})
    assert refused.status_code == 403 and "ada.admin@example.org" not in refused.text
    rule = await client.post("/admin/people/rules", headers={**HTML, **csrf},
                             data={"claim": "groups", "value": "x", "role": "admin", "match": "equals", "effect": "allow"})
    assert rule.status_code == 403 and "enclave-admins" not in rule.text
    actions = await audit_actions(side)  # type: ignore[arg-type]
    assert ("user.deactivate", "denied") in actions and ("role_rule.add", "denied") in actions
    async with side.db() as session:
        admin = await session.get(User, admin_id)
    assert admin is not None and admin.status == "active"
