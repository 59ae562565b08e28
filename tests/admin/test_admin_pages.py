"""The admin pages over HTTP, signed in through the real identity provider: pages, fragments, JSON and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from portal.app import create_app
from portal.runtime import Runtime
from tests.admin.helpers import SideView, counts, make_collection, side_view
from tests.support.auth import AuthActions

HTML = {"accept": "text/html"}
JSON = {"accept": "application/json"}
POLICY = b"# Visiting hours\n\nVisiting hours are 10:00 to 20:00; two visitors per patient at a time.\n"
SYLLABUS = b"# Grade 7 science\n\nUnit 1 covers cells and microscopes; the unit test is in week 6.\n"


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(settings_factory(database_url=database_url, max_upload_mb=1, **sso_settings), configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        await app.state.runtime.wait_for_embedder()
        yield client


@pytest.fixture
async def side(client: AsyncTestClient[Any], database_url: str) -> AsyncIterator[SideView]:
    """The test's own view of the database (and the app's store): never the app's pooled connections."""
    runtime: Runtime = client.app.state.runtime
    view = side_view(runtime, database_url)
    yield view
    await view.close()


async def wait_until_indexed(client: AsyncTestClient[Any], collection_id: str, expected: int) -> str:
    """Poll the htmx fragment like the browser does, until it stops asking to be polled."""
    for _ in range(600):
        fragment = await client.get(f"/admin/collections/{collection_id}/documents", headers={**HTML, "hx-request": "true"})
        assert fragment.status_code == 200
        assert "<html" not in fragment.text  # a fragment, not a page
        if fragment.text.count('data-status="indexed"') == expected and "hx-trigger" not in fragment.text:
            return fragment.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"documents were not indexed: {fragment.text[:2000]}")


async def test_admin_runs_a_collection_from_the_browser_forms(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await auth.login(client, person="admin")
    headers = {**HTML, **await auth.csrf_headers(client)}
    created = await client.post(
        "/admin/collections", data={"name": "Clinical policies", "description": "Ward policies", "more_readers": "nurse, admin"},
        headers=headers, follow_redirects=False,
    )
    assert created.status_code == 303
    location = created.headers["location"]
    collection_id = location.rsplit("/", 1)[-1]
    page = await client.get(location, headers=HTML)
    assert page.status_code == 200 and "Clinical policies" in page.text and 'enctype="multipart/form-data"' in page.text

    uploaded = await client.post(
        f"/admin/collections/{collection_id}/upload", headers=headers,
        files=[("files", ("visiting.md", POLICY, "text/markdown")), ("files", ("../../syllabus.txt", SYLLABUS, "text/plain"))],
    )
    assert uploaded.status_code == 200 and "2 file(s) queued for indexing" in uploaded.text
    fragment = await wait_until_indexed(client, collection_id, 2)
    assert "syllabus.txt" in fragment and "../" not in fragment

    listing = await client.get(f"/admin/collections/{collection_id}", headers=JSON)
    docs = listing.json()["documents"]
    assert {d["status"] for d in docs} == {"indexed"} and all(d["chunk_count"] > 0 for d in docs)
    doc_page = await client.get(f"/admin/documents/{docs[0]['id']}", headers=HTML)
    assert doc_page.status_code == 200 and "Who can read it" in doc_page.text and "admin, nurse" in doc_page.text
    assert "Chunks (" in doc_page.text

    deleted = await client.post(f"/admin/collections/{collection_id}/delete", headers=headers)
    assert deleted.status_code == 200
    assert "2 document(s), 2 stored file(s)" in deleted.text and "0 vector(s) left" in deleted.text
    after = await counts(side)
    assert (after.collections, after.documents, after.vectors, after.files) == (0, 0, 0, 0)


async def test_refusals_show_on_the_page_and_as_4xx_json(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await auth.login(client, person="admin")
    csrf = await auth.csrf_headers(client)
    runtime = side
    collection_id = await make_collection(runtime, "Curriculum", ["teacher"])
    before = await counts(runtime)

    page = await client.post("/admin/collections", data={"name": "curriculum"}, headers={**HTML, **csrf})
    assert page.status_code == 409 and "already exists" in page.text and 'role="alert"' in page.text
    api = await client.post("/admin/collections", data={"name": "Curriculum"}, headers={**JSON, **csrf})
    assert api.status_code == 409 and "already exists" in api.json()["detail"]

    cases = [
        (("big.txt", b"word " * 300_000, "text/plain"), 413, "over the limit of 1 MB"),
        (("syllabus.txt", b"MZ\x90\x00" + bytes(range(256)) * 20, "text/plain"), 415, "not a supported type"),
    ]
    for (name, data, mime), status, message in cases:
        shown = await client.post(f"/admin/collections/{collection_id}/upload", headers={**HTML, **csrf}, files=[("files", (name, data, mime))])
        assert shown.status_code == status and message in shown.text
        answered = await client.post(f"/admin/collections/{collection_id}/upload", headers={**JSON, **csrf}, files=[("files", (name, data, mime))])
        assert answered.status_code == status and message in answered.json()["detail"]
    assert await counts(runtime) == before


async def test_people_without_a_managed_collection_are_kept_out(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    runtime = side
    theirs = await make_collection(runtime, "Curriculum", ["teacher"])
    mine = await make_collection(runtime, "Clinical policies", ["nurse"], manager_role="nurse")
    await auth.login(client, person="teacher")
    assert (await client.get("/admin", headers=HTML)).status_code == 403
    await auth.logout(client)

    await auth.login(client, person="nurse")
    assert (await client.get("/admin", headers=HTML)).status_code == 200
    assert (await client.get(f"/admin/collections/{mine}", headers=HTML)).status_code == 200
    assert (await client.get(f"/admin/collections/{theirs}", headers=HTML)).status_code == 403
    csrf = await auth.csrf_headers(client)
    refused = await client.post(
        f"/admin/collections/{theirs}/upload", headers={**JSON, **csrf}, files=[("files", ("x.md", POLICY, "text/markdown"))]
    )
    assert refused.status_code == 403
    assert (await client.post(f"/admin/collections/{mine}/delete", headers={**JSON, **csrf})).status_code == 403


async def test_api_client_replaces_and_deletes_a_document(client: AsyncTestClient[Any], side: SideView, auth: AuthActions) -> None:
    await auth.login(client, person="admin")
    csrf = await auth.csrf_headers(client)
    collection_id = await make_collection(side, "Clinical policies", ["nurse"])
    created = await client.post(f"/admin/collections/{collection_id}/upload", headers={**JSON, **csrf},
                                files=[("files", ("visiting.md", POLICY, "text/markdown"))])
    assert created.status_code == 202
    (document_id,) = created.json()["created"]
    await wait_until_indexed(client, collection_id, 1)

    bad = await client.post(f"/admin/documents/{document_id}/replace", headers={**HTML, **csrf},
                            files=[("file", ("visiting.md", b"\x00\x01\x02binary" * 100, "text/markdown"))])
    assert bad.status_code == 415 and "not a supported type" in bad.text and "version" in bad.text
    new_policy = POLICY + b"\n## Children\n\nChildren under 12 visit with an adult, 14:00 to 18:00.\n"
    replaced = await client.post(f"/admin/documents/{document_id}/replace", headers={**JSON, **csrf},
                                 files=[("file", ("visiting-2026.md", new_policy, "text/markdown"))])
    assert replaced.status_code == 202 and replaced.json()["job"]
    for _ in range(300):
        document = (await client.get(f"/admin/documents/{document_id}", headers=JSON)).json()
        if document["version"] == 2 and document["status"] == "indexed":
            break
        await asyncio.sleep(0.1)
    assert document["filename"] == "visiting-2026.md" and any("Children under 12" in c["text"] for c in document["chunks"])

    deleted = await client.post(f"/admin/documents/{document_id}/delete", headers={**JSON, **csrf})
    for _ in range(100):  # the replace job finishes its clean-up before a delete is allowed
        if deleted.status_code != 409:
            break
        await asyncio.sleep(0.2)
        deleted = await client.post(f"/admin/documents/{document_id}/delete", headers={**JSON, **csrf})
    assert deleted.status_code == 200 and deleted.json()["vectors_left"] == 0
    assert (await client.get(f"/admin/documents/{document_id}", headers=JSON)).status_code == 404
    after = await counts(side)
    assert (after.documents, after.chunks, after.vectors, after.files) == (0, 0, 0, 0)


async def test_archive_bombs_and_deleting_during_indexing_are_refused_on_the_page_and_in_json(
    client: AsyncTestClient[Any], side: SideView, auth: AuthActions
) -> None:
    import io
    import zipfile

    from portal.db.engine import transaction
    from portal.db.models import Document, IngestionJob

    await auth.login(client, person="admin")
    csrf = await auth.csrf_headers(client)
    collection_id = await make_collection(side, "Clinical policies", ["nurse"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"\0" * 20_000_000)
    bomb = buffer.getvalue()
    async with transaction(side.db) as session:
        document = Document(collection_id=collection_id, filename="big.pdf", content_hash="0" * 64, status="embedding")
        session.add(document)
        await session.flush()
        session.add(IngestionJob(collection_id=collection_id, document_id=document.id, status="running",
                                 worker_id="another-host", heartbeat_at=side.clock.now()))
    before = await counts(side)

    for accept in (HTML, JSON):
        shown = await client.post(f"/admin/collections/{collection_id}/upload", headers={**accept, **csrf},
                                  files=[("files", ("policy.docx", bomb, "application/octet-stream"))])
        assert shown.status_code == 413
        assert "archive bomb" in (shown.text if accept is HTML else shown.json()["detail"])
        refused = await client.post(f"/admin/collections/{collection_id}/delete", headers={**accept, **csrf})
        assert refused.status_code == 409
        assert "being indexed right now" in (refused.text if accept is HTML else refused.json()["detail"])
    assert await counts(side) == before
