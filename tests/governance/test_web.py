"""Governance in the portal, signed in through the real identity provider: admin pages, the audit browser and
export, break-glass with the person's notice, and a person's own export."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from portal.app import create_app
from portal.db.engine import transaction
from portal.db.models import AccessNotice, AuditEvent, Conversation, Message, RetentionPolicy, User

HTML = {"accept": "text/html"}
# The test client runs the app on its own event loop and thread: the test reads the database through its own
# engine (the `factory` fixture), never through the app's.


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings_factory(database_url=database_url, **sso_settings), configure_logs=False)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def _user_id(factory: Any, email: str) -> str:
    async with factory() as session:
        return (await session.execute(select(User.id).where(User.email == email))).scalar_one()


async def _conversation(factory: Any, user_id: str, text: str) -> str:
    async with transaction(factory) as session:
        conversation = Conversation(user_id=user_id, title="Lesson plan")
        session.add(conversation)
        await session.flush()
        session.add(Message(conversation_id=conversation.id, role="user", content=text))
        return conversation.id


async def test_only_admins_reach_governance(client: AsyncTestClient[Any], auth: Any, factory: Any) -> None:
    await auth.login(client, person="teacher")
    for path in ("/governance/", "/governance/audit/", "/governance/retention", "/governance/people"):
        assert (await client.get(path, headers=HTML)).status_code == 403
    export = await client.get("/governance/audit/export?format=csv")
    assert export.status_code == 403


async def test_admin_edits_retention_and_the_change_is_audited(client: AsyncTestClient[Any], auth: Any, factory: Any) -> None:
    await auth.login(client, person="admin")
    page = await client.get("/governance/retention", headers=HTML)
    assert page.status_code == 200 and 'action="/governance/retention"' in page.text and "_csrf_token" in page.text
    headers = await auth.csrf_headers(client)
    saved = await client.post("/governance/retention", data={"role": "student", "conversation_days": "0"},
                              headers={**HTML, **headers}, follow_redirects=False)
    assert saved.status_code == 303
    bad = await client.post("/governance/retention", data={"role": "student", "conversation_days": "-4"},
                            headers={**HTML, **headers})
    assert bad.status_code == 400 and "between 0" in bad.text
    async with factory() as session:
        policy = (await session.execute(select(RetentionPolicy).where(RetentionPolicy.role == "student"))).scalar_one()
        event = (await session.execute(select(AuditEvent).where(AuditEvent.action == "retention.policy_saved"))).scalar_one()
    assert policy.conversation_days == 0
    assert "admin" in event.roles and event.session_hash and event.detail["after"]["conversation_days"] == 0


async def test_audit_browser_filters_pages_fragments_and_exports(client: AsyncTestClient[Any], auth: Any, factory: Any) -> None:
    await auth.login(client, person="admin")
    headers = await auth.csrf_headers(client)
    for role in ("a", "b", "c"):
        await client.post("/governance/retention", data={"role": role, "conversation_days": "5"}, headers=headers)
    page = await client.get("/governance/audit/?action=retention.", headers=HTML)
    assert page.status_code == 200 and "<html" in page.text and "3 records" in page.text
    fragment = await client.get("/governance/audit/?action=retention.", headers={**HTML, "hx-request": "true"})
    assert "<html" not in fragment.text and "3 records" in fragment.text
    bad_date = await client.get("/governance/audit/?since=yesterday", headers=HTML)
    assert bad_date.status_code == 400 and "YYYY-MM-DD" in bad_date.text

    export = await client.get("/governance/audit/export?format=jsonl&action=retention.")
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in export.text.splitlines()]
    assert [r["action"] for r in records] == ["retention.policy_saved"] * 3
    csv_export = await client.get("/governance/audit/export?format=csv")
    assert csv_export.text.splitlines()[0].startswith("seq,at,user_id,roles")
    async with factory() as session:
        exports = (await session.execute(select(AuditEvent).where(AuditEvent.action == "audit.exported"))).scalars().all()
    assert [e.detail["format"] for e in exports] == ["jsonl", "csv"]
    verify = await client.post("/governance/audit/verify", headers={**HTML, **headers})
    assert verify.status_code == 200 and "Intact" in verify.text


async def test_break_glass_needs_a_reason_is_audited_and_the_person_is_told(
    client: AsyncTestClient[Any], auth: Any, factory: Any
) -> None:
    await auth.login(client, person="teacher")
    teacher = await _user_id(factory, "tara.teacher@example.org")
    conversation_id = await _conversation(factory, teacher, "worried about a pupil")
    await auth.logout(client)

    await auth.login(client, person="admin")
    headers = {**HTML, **(await auth.csrf_headers(client))}
    person = await client.get(f"/governance/people/{teacher}", headers=HTML)
    assert person.status_code == 200 and "worried" not in person.text  # dates only before break-glass
    form = await client.get(f"/governance/conversations/{conversation_id}/read", headers=HTML)
    assert "State why" in form.text and "worried" not in form.text
    refused = await client.post(f"/governance/conversations/{conversation_id}/read", data={"reason": "x"}, headers=headers)
    assert refused.status_code == 400 and "worried" not in refused.text
    read = await client.post(f"/governance/conversations/{conversation_id}/read",
                             data={"reason": "Safeguarding referral 2026-14"}, headers=headers)
    assert read.status_code == 200 and "worried about a pupil" in read.text
    async with factory() as session:
        outcomes = (await session.execute(
            select(AuditEvent.outcome).where(AuditEvent.action == "breakglass.read").order_by(AuditEvent.seq))).scalars().all()
    assert outcomes == ["denied", "allowed"]
    await auth.logout(client)

    await auth.login(client, person="teacher")
    home = await client.get("/", headers=HTML)
    assert "An administrator read your conversation" in home.text and "Safeguarding referral 2026-14" in home.text
    notice_id = (await _notices(factory, teacher))[0].id
    seen = await client.post(f"/me/notices/{notice_id}/seen", headers={**HTML, **(await auth.csrf_headers(client))},
                             follow_redirects=False)
    assert seen.status_code == 303
    assert "An administrator read your conversation" not in (await client.get("/", headers=HTML)).text


async def _notices(factory: Any, user_id: str) -> list[AccessNotice]:
    async with factory() as session:
        return list((await session.execute(select(AccessNotice).where(AccessNotice.user_id == user_id))).scalars())


async def test_people_export_their_own_data_and_admins_answer_records_requests(
    client: AsyncTestClient[Any], auth: Any, factory: Any
) -> None:
    await auth.login(client, person="nurse")
    nurse = await _user_id(factory, "noah.nurse@example.org")
    await _conversation(factory, nurse, "dosage question from noah")
    await auth.logout(client)
    await auth.login(client, person="teacher")
    teacher = await _user_id(factory, "tara.teacher@example.org")
    await _conversation(factory, teacher, "fractions question from tara")
    page = await client.get("/me/data", headers=HTML)
    assert 'action="/me/export"' in page.text and "90 days" in page.text
    own = await client.post("/me/export", headers=await auth.csrf_headers(client))
    assert own.status_code == 200 and own.headers["content-type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(own.content))
    everything = "".join(files.read(n).decode() for n in files.namelist())
    assert "fractions question from tara" in everything and "dosage" not in everything and nurse not in everything
    await auth.logout(client)

    await auth.login(client, person="admin")
    request = await client.post(f"/governance/people/{nurse}/records", headers=await auth.csrf_headers(client))
    files = zipfile.ZipFile(io.BytesIO(request.content))
    everything = "".join(files.read(n).decode() for n in files.namelist())
    assert "dosage question from noah" in everything and "fractions" not in everything and teacher not in everything


async def test_hold_placed_in_the_portal_survives_an_admin_deleting_the_person(
    client: AsyncTestClient[Any], auth: Any, factory: Any
) -> None:
    await auth.login(client, person="nurse")
    nurse = await _user_id(factory, "noah.nurse@example.org")
    held = await _conversation(factory, nurse, "incident on ward 3")
    free = await _conversation(factory, nurse, "rota question")
    await auth.logout(client)
    await auth.login(client, person="admin")
    headers = {**HTML, **(await auth.csrf_headers(client))}
    form = await client.get(f"/governance/holds?subject_type=conversation&subject_id={held}", headers=HTML)
    assert f'value="{held}"' in form.text
    placed = await client.post("/governance/holds", headers=headers, follow_redirects=False, data={
        "subject_type": "conversation", "subject_id": held, "reason": "incident review", "case_reference": "IR-88"})
    assert placed.status_code == 303
    assert "IR-88" in (await client.get("/governance/holds", headers=HTML)).text
    refused = await client.post(f"/governance/people/{nurse}/delete", data={"confirm": "wrong"}, headers=headers)
    assert refused.status_code == 400
    deleted = await client.post(f"/governance/people/{nurse}/delete", data={"confirm": nurse}, headers=headers,
                                follow_redirects=False)
    assert deleted.status_code == 303 and "deleted_except_held" in deleted.headers["location"]
    async with factory() as session:
        assert await session.get(Conversation, held) is not None
        assert await session.get(Conversation, free) is None
        user = await session.get(User, nurse)
        assert user is not None and user.status == "deactivated"
