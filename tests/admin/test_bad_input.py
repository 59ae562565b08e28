"""Bad input gets a clear refusal and changes nothing: database rows, vectors and stored files stay as they were."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portal.admin import collections, documents
from portal.admin.documents import IncomingFile
from portal.admin.errors import AdminError, Conflict, Forbidden, TooLarge, Unsupported
from portal.jobs import job_store
from portal.jobs.workers import InProcessWorkers
from portal.runtime import Runtime
from tests.admin.helpers import audit_actions, counts, make_collection, make_person, wait_for_status

GOOD = b"# Visiting hours\n\nVisiting hours are 10:00 to 20:00; two visitors per patient at a time.\n"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture
async def small_limit_runtime(settings_factory: Any, database_url: str) -> AsyncIterator[Runtime]:
    runtime = Runtime.create(settings_factory(database_url=database_url, workers=0, max_upload_mb=1))
    await runtime.start()
    await runtime.wait_for_embedder()
    workers = InProcessWorkers(runtime, 1, context_overrides={"old_version_grace_s": 0.1})
    workers.start()
    runtime.jobs = workers
    try:
        yield runtime
    finally:
        await runtime.stop()


BAD_FILES = [
    pytest.param("huge.txt", b"word " * 300_000, TooLarge, "over the limit of 1 MB", id="over-size-limit"),
    pytest.param("policy.txt", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 40, Unsupported, "not a supported type", id="disguised-binary"),
    pytest.param("policy.docx", zip_bytes({"word/document.xml": b"\0" * 30_000_000}), TooLarge, "archive bomb", id="zip-bomb"),
    pytest.param("policy.docx", zip_bytes({"readme.txt": b"hello"}), Unsupported, "not a Word", id="zip-not-docx"),
    pytest.param("policy.pdf", encrypted_pdf(), Unsupported, "password", id="encrypted-pdf"),
    pytest.param("empty.md", b"   \n", AdminError, "empty", id="empty-file"),
]


@pytest.mark.parametrize(("name", "data", "error", "message"), BAD_FILES)
async def test_a_bad_file_is_refused_and_nothing_changes(
    small_limit_runtime: Runtime, name: str, data: bytes, error: type[AdminError], message: str
) -> None:
    runtime = small_limit_runtime
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (good_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("visiting.md", GOOD)])).created
    await wait_for_status(runtime, [good_id], {"indexed"})
    before = await counts(runtime)
    # A good file in the same batch is not half-created either.
    with pytest.raises(error) as refused:
        await documents.upload_documents(
            runtime, admin, collection_id, [IncomingFile("fine.md", GOOD + b"More."), IncomingFile(name, data)]
        )
    assert message in refused.value.message and name in refused.value.message
    assert await counts(runtime) == before
    with pytest.raises(error):
        await documents.replace_document(runtime, admin, good_id, IncomingFile(name, data))
    assert await counts(runtime) == before
    assert ("document.upload", "denied") in await audit_actions(runtime)


async def test_a_duplicate_collection_name_is_refused(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@maple.test", ["admin"])
    await collections.create_collection(runtime, admin, "Curriculum", "Course guides", ["teacher"])
    before = await counts(runtime)
    with pytest.raises(Conflict) as refused:
        await collections.create_collection(runtime, admin, "  curriculum ", "Again", ["teacher"])
    assert "already exists" in refused.value.message
    other = await collections.create_collection(runtime, admin, "Staff handbook", "", [])
    with pytest.raises(Conflict):
        await collections.update_collection(runtime, admin, other, "CURRICULUM", "")
    after = await counts(runtime)
    assert after.collections == before.collections + 1
    assert (after.documents, after.vectors, after.files) == (before.documents, before.vectors, before.files)


async def test_deleting_a_collection_while_a_job_runs_is_refused(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (document_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("visiting.md", GOOD)])).created
    await wait_for_status(runtime, [document_id], {"indexed"})
    job_id = await documents.reindex_document(runtime, admin, document_id)
    # Hold the job as "running" for another worker (claimed before the in-process worker gets to it).
    claimed = await job_store.claim_job(runtime.db, job_id, "another-host", runtime.clock.now())
    if not claimed:
        pytest.skip("the in-process worker claimed the job first")
    before = await counts(runtime)
    with pytest.raises(Conflict) as refused:
        await collections.delete_collection(runtime, admin, collection_id)
    assert "being indexed" in refused.value.message
    with pytest.raises(Conflict):
        await documents.delete_document(runtime, admin, document_id)
    assert await counts(runtime) == before


async def test_deleting_a_collection_removes_documents_files_and_every_vector(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    keep_id = await make_collection(runtime, "Staff handbook", ["staff"])
    drop_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    kept = (await documents.upload_documents(runtime, admin, keep_id, [IncomingFile("visiting.md", GOOD)])).created
    dropped = (await documents.upload_documents(
        runtime, admin, drop_id, [IncomingFile("a.md", GOOD + b"A"), IncomingFile("b.md", GOOD + b"B")]
    )).created
    await wait_for_status(runtime, kept + dropped, {"indexed"})
    before = await counts(runtime)
    report = await collections.delete_collection(runtime, admin, drop_id)
    assert (report.documents, report.files, report.vectors_left) == (2, 2, 0)
    assert report.vectors == report.chunks > 0
    after = await counts(runtime)
    assert after.collections == before.collections - 1
    assert after.documents == before.documents - 2 and after.files == before.files - 2
    assert after.vectors == before.vectors - report.vectors
    assert runtime.store is not None and await runtime.store.count(collection_id=drop_id) == 0
    assert ("collection.delete", "allowed") in await audit_actions(runtime)


async def test_a_collection_manager_cannot_touch_another_collection(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    librarian = await make_person(runtime, "librarian@riverside.test", ["clinical-librarian"])
    mine = await make_collection(runtime, "Clinical policies", ["nurse"], manager_role="clinical-librarian")
    theirs = await make_collection(runtime, "Curriculum", ["teacher"])
    (their_doc,) = (await documents.upload_documents(runtime, admin, theirs, [IncomingFile("syllabus.md", GOOD)])).created
    await wait_for_status(runtime, [their_doc], {"indexed"})
    before = await counts(runtime)
    attempts = [
        documents.upload_documents(runtime, librarian, theirs, [IncomingFile("x.md", GOOD + b"x")]),
        documents.reindex_document(runtime, librarian, their_doc),
        documents.replace_document(runtime, librarian, their_doc, IncomingFile("y.md", GOOD + b"y")),
        documents.delete_document(runtime, librarian, their_doc),
        documents.reindex_collection(runtime, librarian, theirs),
        collections.delete_collection(runtime, librarian, theirs),
        collections.grant_read(runtime, librarian, mine, "student"),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden):
            await attempt
    assert await counts(runtime) == before
    denied = [a for a, outcome in await audit_actions(runtime) if outcome == "denied"]
    assert {"document.upload", "document.reindex", "document.replace", "document.delete", "collection.delete"} <= set(denied)
    # Their own collection works.
    (own_doc,) = (await documents.upload_documents(runtime, librarian, mine, [IncomingFile("own.md", GOOD + b"own")])).created
    await wait_for_status(runtime, [own_doc], {"indexed"})


async def test_a_file_the_background_parse_rejects_is_marked_failed_with_the_reason(runtime: Runtime) -> None:
    """A scanned PDF passes the door (it is a readable PDF) but has no text: the job fails in plain words."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    scan = io.BytesIO()
    writer.write(scan)
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (document_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("scan.pdf", scan.getvalue())])).created
    failed = (await wait_for_status(runtime, [document_id], {"failed", "indexed"}))[document_id]
    assert failed.status == "failed" and "no extractable text" in (failed.error or "")
    assert failed.version == 0 and failed.chunk_count == 0
    assert runtime.store is not None and await runtime.store.count(document_id=document_id) == 0
