"""Chat over HTTP end to end: real sign-in (OIDC provider process), real llama.cpp server, embedder, store, database."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from portal.app import create_app
from portal.db.engine import make_engine, make_session_factory, transaction
from portal.db.models import AuditEvent, Conversation, Feedback, LegalHold, Message
from tests.chat.helpers import IndexedDocument, seed_library_before_start

pytestmark = pytest.mark.llm

HTML = {"accept": "text/html"}
HTMX = {"accept": "text/html", "hx-request": "true"}
QUESTION = "How long must staff wash their hands before patient contact?"


def parse_sse(body: str) -> list[tuple[str, str]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if name:
            events.append((name, "\n".join(data)))
    return events


@pytest.fixture
async def chat_app(
    database_url: str, settings_factory: Any, sso_settings: dict[str, Any], llm_server: Any
) -> AsyncIterator[tuple[Any, tuple[IndexedDocument, IndexedDocument]]]:
    """One client for the app's lifetime (each client runs the app's lifespan); people switch by signing in again."""
    settings = settings_factory(
        database_url=database_url, llm_base_url=llm_server.base_url, llm_max_tokens=64, llm_context_window=4096,
        chat_questions_per_minute=30, **sso_settings,
    )
    library = await seed_library_before_start(settings)
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client, library


@pytest.fixture
async def test_db(database_url: str) -> AsyncIterator[Any]:
    """A session factory on the test's own loop (the app's pools belong to the app's loop thread)."""
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    await engine.dispose()


async def sign_in_as(client: Any, auth: Any, person: str) -> dict[str, str]:
    client.cookies.clear()
    await auth.login(client, person=person)
    return dict(await auth.csrf_headers(client))


async def ask_htmx(client: Any, headers: dict[str, str], question: str, conversation_id: str = "") -> tuple[str, str]:
    response = await client.post("/chat/ask", data={"question": question, "conversation_id": conversation_id},
                                 headers={**HTMX, **headers})
    assert response.status_code == 200, response.text
    stream_url = re.search(r'sse-connect="(/chat/stream/[^"]+)"', response.text)
    assert stream_url, response.text
    return response.text, stream_url.group(1)


async def test_ask_stream_cite_and_open_the_passage(chat_app: Any, auth: Any, test_db: Any) -> None:
    nurse, (hygiene, algebra) = chat_app
    headers = await sign_in_as(nurse, auth, "nurse")
    page = await nurse.get("/chat", headers=HTML)
    assert page.status_code == 200 and 'id="question"' in page.text and "_csrf_token" in page.text

    fragment, stream_url = await ask_htmx(nurse, headers, QUESTION)
    assert QUESTION in fragment and 'aria-live="polite"' in fragment and "Stop" in fragment
    conversation_id = re.search(r'name="conversation_id" value="([0-9a-f]+)"[^>]*hx-swap-oob', fragment).group(1)

    stream = await nurse.get(stream_url)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    names = [name for name, _ in events]
    assert names.count("token") > 3 and names[-2:] == ["sources", "done"]
    sources_html = events[-2][1]
    assert hygiene.title in sources_html and "/chat/passages/" in sources_html
    assert algebra.title not in stream.text

    conversation = await nurse.get(f"/chat/c/{conversation_id}", headers=HTML)
    assert conversation.status_code == 200 and QUESTION in conversation.text
    passage_link = re.search(r'href="(/chat/passages/[^"]+)"', conversation.text).group(1)
    passage = await nurse.get(passage_link, headers=HTML)
    assert passage.status_code == 200 and "<mark" in passage.text and hygiene.title in passage.text

    # Follow-up question in the same conversation, as htmx sends it.
    _, second_url = await ask_htmx(nurse, headers, "And for how long with alcohol hand rub?", conversation_id)
    assert parse_sse((await nurse.get(second_url)).text)[-1][0] == "done"
    async with test_db() as session:
        count = len((await session.execute(select(Message).where(Message.conversation_id == conversation_id))).all())
    assert count == 4

    teacher = nurse
    await sign_in_as(teacher, auth, "teacher")
    # Someone else's conversation and a passage from a collection they cannot read: not found, nothing shown.
    assert (await teacher.get(f"/chat/c/{conversation_id}", headers=HTML)).status_code == 404
    denied = await teacher.get(passage_link, headers=HTML)
    assert denied.status_code == 404 and hygiene.title not in denied.text
    headers = await auth.csrf_headers(teacher)
    _, stream_url = await ask_htmx(teacher, headers, QUESTION + " hand hygiene policy gloves soap")
    body = (await teacher.get(stream_url)).text
    assert hygiene.title not in body and "wash their hands with soap" not in body


async def test_without_javascript_the_answer_arrives_whole(chat_app: Any, auth: Any) -> None:
    nurse, (hygiene, _) = chat_app
    headers = await sign_in_as(nurse, auth, "nurse")
    response = await nurse.post("/chat/ask", data={"question": QUESTION}, headers={**HTML, **headers},
                                follow_redirects=False)
    assert response.status_code == 303
    page = await nurse.get(response.headers["location"], headers=HTML)
    assert page.status_code == 200 and "sse-connect" not in page.text
    assert hygiene.title in page.text and 'class="answer status-complete"' in page.text


async def test_api_client_gets_json_and_429_over_the_limit(
    database_url: str, settings_factory: Any, sso_settings: dict[str, Any], llm_server: Any, auth: Any
) -> None:
    settings = settings_factory(database_url=database_url, llm_base_url=llm_server.base_url,
                                chat_questions_per_minute=1, **sso_settings)
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        await auth.login(client, person="nurse")
        headers = {**(await auth.csrf_headers(client)), "accept": "application/json"}
        first = await client.post("/chat/ask", data={"question": "first"}, headers=headers)
        assert first.status_code == 201 and first.json()["stream_url"].startswith("/chat/stream/")
        second = await client.post("/chat/ask", data={"question": "second"}, headers=headers)
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        assert "limit for your role" in second.json()["detail"]
        # A person using the page sees the same message where they are looking.
        third = await client.post("/chat/ask", data={"question": "third"}, headers={**HTMX, **headers})
        assert third.status_code == 200 and third.headers["hx-retarget"] == "#chat-notice"
        assert "limit for your role" in third.text


async def test_feedback_rename_search_and_delete(chat_app: Any, auth: Any, test_db: Any) -> None:
    nurse, _ = chat_app
    clock = nurse.app.state.runtime.clock
    headers = await sign_in_as(nurse, auth, "nurse")
    _, stream_url = await ask_htmx(nurse, headers, QUESTION)
    await nurse.get(stream_url)
    answer_id = stream_url.rsplit("/", 1)[1]
    async with test_db() as session:
        conversation_id = (await session.get(Message, answer_id)).conversation_id

    thanks = await nurse.post(f"/chat/messages/{answer_id}/feedback", data={"rating": "-1", "comment": "too short"},
                              headers={**HTMX, **headers})
    assert thanks.status_code == 200 and "feedback was saved" in thanks.text
    async with test_db() as session:
        feedback = (await session.execute(select(Feedback).where(Feedback.message_id == answer_id))).scalar_one()
    assert (feedback.rating, feedback.comment) == (-1, "too short")

    renamed = await nurse.post(f"/chat/c/{conversation_id}/rename", data={"title": "Hand washing times"},
                               headers={**HTML, **headers}, follow_redirects=False)
    assert renamed.status_code == 303
    sidebar = await nurse.get("/chat", headers=HTML)
    assert "Hand washing times" in sidebar.text

    found = await nurse.get("/chat/search", params={"q": "WASH their hands"}, headers=HTML)
    assert found.status_code == 200 and f"/chat/c/{conversation_id}" in found.text
    assert "Nothing in your history matches" in (await nurse.get("/chat/search", params={"q": "zebra%"},
                                                                 headers=HTML)).text

    # Under legal hold the delete is refused with a clear message; once lifted it really deletes.
    async with transaction(test_db) as session:
        hold = LegalHold(subject_type="conversation", subject_id=conversation_id, reason="case", case_reference="C-1",
                         placed_at=clock.now())
        session.add(hold)
    refused = await nurse.post(f"/chat/c/{conversation_id}/delete", headers={**HTML, **headers}, follow_redirects=False)
    assert refused.status_code == 409 and "legal hold" in refused.text and "Traceback" not in refused.text
    async with transaction(test_db) as session:
        (await session.get(LegalHold, hold.id)).lifted_at = clock.now()
    deleted = await nurse.post(f"/chat/c/{conversation_id}/delete", headers={**HTML, **headers}, follow_redirects=False)
    assert deleted.status_code == 303
    async with test_db() as session:
        assert await session.get(Conversation, conversation_id) is None
        assert (await session.execute(select(Message).where(Message.conversation_id == conversation_id))).first() is None
        # The one deletion path every other way in uses (portal.governance.erasure), audited as such.
        deletions = (await session.execute(
            select(AuditEvent).where(AuditEvent.action == "conversation.deleted")
        )).scalars().all()
    assert [e.outcome for e in deletions if conversation_id in e.object_ids] == ["allowed"]
    gone = await nurse.post(f"/chat/c/{conversation_id}/delete", headers={**HTML, **headers}, follow_redirects=False)
    assert gone.status_code == 404 and "Traceback" not in gone.text


async def test_signed_out_people_cannot_chat(chat_app: Any) -> None:
    client, _ = chat_app
    response = await client.get("/chat", headers=HTML, follow_redirects=False)
    assert response.status_code in (302, 303, 401)
    stream = await client.get("/chat/stream/abc", follow_redirects=False)
    assert stream.status_code in (302, 303, 401)


async def test_a_page_offers_retry_for_an_answer_whose_process_stopped(chat_app: Any, auth: Any, test_db: Any) -> None:
    """An answer left `streaming` by a portal process that died becomes failed (retryable) when its conversation is
    shown — without JavaScript too — while one with a live heartbeat elsewhere is left alone."""
    nurse, _ = chat_app
    headers = await sign_in_as(nurse, auth, "nurse")
    _fragment, stream_url = await ask_htmx(nurse, headers, QUESTION)  # saved; the stream is never opened
    answer_id = stream_url.rsplit("/", 1)[1]
    async with transaction(test_db) as session:
        await session.execute(update(Message).where(Message.id == answer_id).values(status="streaming"))
        conversation_id = (await session.get(Message, answer_id)).conversation_id  # type: ignore[union-attr]

    page = await nurse.get(f"/chat/c/{conversation_id}", headers=HTML)
    assert page.status_code == 200
    assert 'class="answer status-failed"' in page.text and "The portal stopped while writing this answer" in page.text
    assert f"/chat/messages/{answer_id}/retry" in page.text and "sse-connect" not in page.text
    async with test_db() as session:
        stored = await session.get(Message, answer_id)
        assert stored is not None and stored.status == "failed"
        assert (await session.execute(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "chat.answer_interrupted"))).scalar_one() == 1
