"""Upload, index in the background, replace atomically, delete to zero: real database, store and model."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from portal.admin import documents
from portal.admin.documents import IncomingFile
from portal.db.models import Document, DocumentChunk
from portal.jobs import stored_files
from portal.runtime import Runtime
from rag.types import AccessFilter
from tests.admin.helpers import audit_actions, counts, make_collection, make_person, wait_for_status

HAND_HYGIENE = b"""# Hand hygiene policy

## When to clean hands
Staff clean their hands before touching a patient, before a clean or aseptic procedure, after body fluid
exposure risk, after touching a patient and after touching patient surroundings.

## Alcohol-based hand rub
Use alcohol-based hand rub for 20 to 30 seconds when hands are not visibly soiled.
"""

FIRE_DRILL = b"""Fire drill procedure

Every ward holds a fire drill twice a year. The nurse in charge leads patients to the assembly point
beside the north car park and counts everyone present against the ward list.
"""

OLD_SHIFT = b"# Shift handover\n\nHandover happens at 07:00 and 19:00 at the nurses' station, using the blue form.\n"
NEW_SHIFT = (
    b"# Shift handover\n\nHandover now happens at 07:30 and 19:30 at the bedside, using the electronic SBAR note.\n\n"
    b"## Escalation\n\nUnstable patients are handed over first, in person, with the charge nurse present.\n"
)


async def test_upload_indexes_in_the_background_and_names_files_by_content(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    result = await documents.upload_documents(
        runtime, admin, collection_id,
        [IncomingFile("../../etc/hand-hygiene.md", HAND_HYGIENE), IncomingFile("C:\\temp\\fire drill.txt", FIRE_DRILL)],
    )
    assert len(result.created) == 2 and len(result.job_ids) == 2
    found = await wait_for_status(runtime, result.created, {"indexed", "failed"})
    assert {d.status for d in found.values()} == {"indexed"}, [d.error for d in found.values()]
    assert runtime.store is not None
    for document in found.values():
        assert document.version == 1 and document.progress == 1.0 and document.chunk_count > 0
        assert await runtime.store.count(document_id=document.id) == document.chunk_count
        # The client's path tricks only ever reach the display name; the disk name is the content hash.
        assert "/" not in document.filename and "\\" not in document.filename
        assert document.storage_path == stored_files.relative_path_for(document.content_hash)
        assert stored_files.resolve(runtime.settings.files_path, document.storage_path).is_file()
    assert sorted(d.filename for d in found.values()) == ["fire drill.txt", "hand-hygiene.md"]
    assert not (runtime.settings.data_dir.parent / "etc").exists()
    async with runtime.db() as session:
        rows = await session.scalar(select(func.count()).select_from(DocumentChunk))
    assert rows == sum(d.chunk_count for d in found.values())
    assert ("document.upload", "allowed") in await audit_actions(runtime)

    again = await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("copy.md", HAND_HYGIENE)])
    assert again.created == [] and again.unchanged == ["copy.md"]


async def test_delete_document_leaves_zero_rows_vectors_and_files(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    result = await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("fire.txt", FIRE_DRILL)])
    (document_id,) = result.created
    indexed = (await wait_for_status(runtime, [document_id], {"indexed"}))[document_id]
    report = await documents.delete_document(runtime, admin, document_id)
    assert report.vectors == indexed.chunk_count and report.chunks == indexed.chunk_count
    assert report.files == 1 and report.vectors_left == 0
    after = await counts(runtime)
    assert (after.documents, after.chunks, after.jobs, after.vectors, after.files) == (0, 0, 0, 0, 0)
    assert ("document.delete", "allowed") in await audit_actions(runtime)


async def test_replace_is_atomic_for_a_concurrent_searcher(runtime: Runtime) -> None:
    """A searcher reads the current version, searches, keeps hits of that version: never both, never neither."""
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (document_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("handover.md", OLD_SHIFT)])).created
    await wait_for_status(runtime, [document_id], {"indexed"})
    assert runtime.store is not None
    embedder = await runtime.wait_for_embedder()
    query = await embedder.aembed_query("When is shift handover?")
    access = AccessFilter(collection_ids=frozenset({collection_id}))
    seen: list[tuple[int, frozenset[int]]] = []
    seen_after: list[tuple[int, frozenset[int]]] = []
    stop = asyncio.Event()

    async def current_version() -> int:
        async with runtime.db() as session:
            return int(await session.scalar(select(Document.version).where(Document.id == document_id)) or 0)

    async def search_versions() -> frozenset[int]:
        results = await runtime.store.search(access, 20, dense=query)  # type: ignore[union-attr]
        return frozenset(h.document_version for h in results.dense if h.document_id == document_id)

    async def searcher() -> None:
        """Reads the current version, then searches."""
        while not stop.is_set():
            current = await current_version()
            seen.append((current, await search_versions()))
            await asyncio.sleep(0.02)  # a question every few ms, not a lock-hogging spin

    async def searcher_reading_after() -> None:
        """Searches, then reads the current version (the chat's order)."""
        while not stop.is_set():
            versions = await search_versions()
            seen_after.append((await current_version(), versions))
            await asyncio.sleep(0.02)  # a question every few ms, not a lock-hogging spin

    task = asyncio.create_task(searcher())
    task_after = asyncio.create_task(searcher_reading_after())
    job_id = await documents.replace_document(runtime, admin, document_id, IncomingFile("handover-2026.md", NEW_SHIFT))
    assert job_id is not None
    replaced = (await wait_for_status(runtime, [document_id], {"indexed", "failed"}))[document_id]
    while replaced.version != 2:
        replaced = (await wait_for_status(runtime, [document_id], {"indexed", "failed"}))[document_id]
    await asyncio.sleep(1.0)  # past the old version's grace period
    stop.set()
    await asyncio.gather(task, task_after)
    assert replaced.status == "indexed" and replaced.filename == "handover-2026.md"
    for observations in (seen, seen_after):
        assert {current for current, _ in observations} == {1, 2}, "searches must run before and after the flip"
        for current, versions in observations:
            # Keeping the hits of the current version leaves exactly one version: never both, never neither.
            assert current in versions, f"version {current} was current but the search found only {set(versions)}"
    # The old version's points are gone once the grace period passed; the new ones match the chunk rows.
    assert await runtime.store.count(document_id=document_id, document_version=1) == 0
    assert await runtime.store.count(document_id=document_id) == replaced.chunk_count
    async with runtime.db() as session:
        versions = set((await session.execute(select(DocumentChunk.version).where(DocumentChunk.document_id == document_id))).scalars())
    assert versions == {2}
    # The old file is gone (no other document uses it); the new one is stored.
    old_path = stored_files.relative_path_for(stored_files.content_hash(OLD_SHIFT))
    assert not stored_files.resolve(runtime.settings.files_path, old_path).exists()
    assert stored_files.resolve(runtime.settings.files_path, replaced.storage_path or "").exists()


async def test_reindex_rewrites_the_same_document_without_duplicates(runtime: Runtime) -> None:
    admin = await make_person(runtime, "admin@riverside.test", ["admin"])
    collection_id = await make_collection(runtime, "Clinical policies", ["nurse"])
    (document_id,) = (await documents.upload_documents(runtime, admin, collection_id, [IncomingFile("fire.txt", FIRE_DRILL)])).created
    first = (await wait_for_status(runtime, [document_id], {"indexed"}))[document_id]
    await documents.reindex_collection(runtime, admin, collection_id)
    for _ in range(200):
        second = (await wait_for_status(runtime, [document_id], {"indexed"}))[document_id]
        if second.version == 2:
            break
        await asyncio.sleep(0.05)
    assert second.version == 2 and second.chunk_count == first.chunk_count
    assert runtime.store is not None
    # The old version's vectors go after the new version is current: wait for that (a fixed 0.8 s was too short
    # on a loaded machine), then the store holds exactly one version's chunks.
    for _ in range(300):
        if await runtime.store.count(document_id=document_id) == second.chunk_count:
            break
        await asyncio.sleep(0.1)
    assert await runtime.store.count(document_id=document_id) == second.chunk_count
    assert await runtime.store.count(document_id=document_id, document_version=1) == 0
