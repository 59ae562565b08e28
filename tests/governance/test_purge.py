"""The retention purge: the right conversations go, nothing of them is left in any store, receipts add up."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import verify_chain
from portal.clock import MovableClock
from portal.db.base import Base
from portal.db.engine import transaction
from portal.db.models import (
    Attachment,
    AuditEvent,
    Citation,
    Collection,
    Conversation,
    Document,
    DocumentChunk,
    Feedback,
    KeyValue,
    Message,
)
from portal.governance.holds import place_hold
from portal.governance.purge import run_purge
from tests.governance.conftest import ADMIN_CTX, T0, add_conversation, add_policy, add_user, put_vectors


async def _chat_history(
    factory: async_sessionmaker[AsyncSession], store: Any, files: Path, user_id: str, *, words: str
) -> dict[str, list[str]]:
    """One conversation as chat writes it: question, answer with citations, feedback, an attachment with
    its file and vectors, and a cache entry keyed by the answer."""
    conversation_id = await add_conversation(factory, user_id, text=f"question about {words}")
    async with transaction(factory) as session:
        answer = Message(conversation_id=conversation_id, role="assistant", content=f"answer about {words}", created_at=T0)
        session.add(answer)
        await session.flush()
        session.add(Citation(message_id=answer.id, ordinal=1, chunk_id="doc1:0", document_id="doc1", collection_id="col1"))
        session.add(Feedback(message_id=answer.id, user_id=user_id, rating=1, comment=f"thanks {words}", created_at=T0))
        attachment = Attachment(conversation_id=conversation_id, user_id=user_id, filename="note.txt", content_hash="h")
        session.add(attachment)
        await session.flush()
        folder = files / "attachments" / attachment.id
        folder.mkdir(parents=True)
        (folder / "note.txt").write_text(f"attached {words}")
        attachment.storage_path = f"attachments/{attachment.id}/note.txt"
        session.add(KeyValue(key=f"chat:answer-cache:{answer.id}", value=words.encode()))
        message_ids = list((await session.execute(select(Message.id).where(Message.conversation_id == conversation_id))).scalars())
    await put_vectors(store, attachment.id, f"attachments:{conversation_id}")
    return {"conversations": [conversation_id], "messages": message_ids, "attachments": [attachment.id]}


async def _residue(factory: async_sessionmaker[AsyncSession], needles: list[str]) -> list[str]:
    """Every row of every table (audit records aside: they keep ids, never text) that mentions a needle."""
    found = []
    async with factory() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in ("audit_events", "audit_chain_head"):
                continue
            for row in (await session.execute(select(table))).all():
                blob = repr(tuple(row))
                found.extend(f"{table.name}: {needle}" for needle in needles if needle in blob)
    return found


async def test_two_roles_two_periods_only_the_expired_go_and_nothing_is_left(
    factory: async_sessionmaker[AsyncSession], any_store: Any, settings_factory: Any, database_url: str
) -> None:
    store = any_store
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    files = settings.files_path
    await add_policy(factory, "nurse", 7)
    await add_policy(factory, "teacher", 90)
    nurse = await add_user(factory, "nina", "nurse")
    teacher = await add_user(factory, "tom", "teacher")
    gone = await _chat_history(factory, store, files, nurse, words="ward six")
    more_gone = await _chat_history(factory, store, files, nurse, words="ward seven")
    kept = await _chat_history(factory, store, files, teacher, words="algebra")

    clock.advance(timedelta(days=8))
    report = await run_purge(factory, store, settings, batch_size=1)

    assert report.complete and report.conversations == 2
    nurse_counts = report.policies["role:nurse"].kinds
    assert nurse_counts == {
        "conversations": 2, "messages": 4, "citations": 2, "feedback": 2, "attachments": 2, "cache_entries": 2,
    }
    assert report.policies["role:teacher"].kinds["conversations"] == 0
    assert report.files_and_vectors.files == 2 and report.files_and_vectors.vectors == 6
    # Zero residue in every store: database tables, the vector store, files on disk.
    ids = [i for part in (gone, more_gone) for values in part.values() for i in values]
    assert await _residue(factory, [*ids, "ward six", "ward seven"]) == []
    for attachment_id in gone["attachments"] + more_gone["attachments"]:
        assert await store.count(document_id=attachment_id) == 0
        assert not (files / "attachments" / attachment_id).exists()
    # The teacher's conversation is whole.
    async with factory() as session:
        assert await session.get(Conversation, kept["conversations"][0]) is not None
        assert len((await session.execute(select(Message).where(Message.conversation_id == kept["conversations"][0]))).all()) == 2
    assert await store.count(document_id=kept["attachments"][0]) == 3
    assert (files / "attachments" / kept["attachments"][0] / "note.txt").exists()
    # The receipt, and no text in the audit trail.
    async with factory() as session:
        events = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq))).scalars().all()
        assert (await verify_chain(session)).ok
    receipt = [e for e in events if e.action == "purge.receipt"][-1]
    assert receipt.detail["policies"]["role:nurse"]["kinds"]["conversations"] == 2
    assert receipt.detail["policies"]["role:nurse"]["days"] == 7
    assert receipt.detail["files_erased"] == 2 and receipt.detail["vectors_erased"] == 6
    assert "ward" not in repr([(e.detail, e.object_ids) for e in events])

    # The teacher's goes once 90 days have passed since its last activity.
    clock.advance(timedelta(days=83))
    report = await run_purge(factory, store, settings)
    assert report.policies["role:teacher"].kinds["conversations"] == 1
    assert await _residue(factory, [*kept["conversations"], *kept["messages"], *kept["attachments"], "algebra"]) == []


async def test_recent_activity_keeps_a_conversation(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0 + timedelta(days=8))
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "nurse", 7)
    nurse = await add_user(factory, "nina", "nurse")
    old = await add_conversation(factory, nurse, last_activity=T0)
    active = await add_conversation(factory, nurse, last_activity=T0 + timedelta(days=5))
    await run_purge(factory, store, settings)
    async with factory() as session:
        assert await session.get(Conversation, old) is None
        assert await session.get(Conversation, active) is not None


async def test_interrupted_purge_rerun_finishes_and_counts_each_record_once(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "student", 30)
    people = [await add_user(factory, f"s{i}", "student") for i in range(2)]
    histories = [await _chat_history(factory, store, settings.files_path, p, words=f"essay {i}") for i, p in enumerate(people * 2)]
    clock.advance(timedelta(days=31))

    first = await run_purge(factory, store, settings, batch_size=1, max_batches=2)
    assert not first.complete and first.conversations == 2
    second = await run_purge(factory, store, settings, batch_size=1)
    assert second.complete and second.conversations == 2
    third = await run_purge(factory, store, settings)
    assert third.conversations == 0

    async with factory() as session:
        batches = (await session.execute(select(AuditEvent).where(AuditEvent.action == "purge.batch"))).scalars().all()
    deleted = [cid for b in batches for cid in b.object_ids]
    assert sorted(deleted) == sorted(h["conversations"][0] for h in histories)  # each exactly once
    assert sum(b.detail["kinds"]["messages"] for b in batches) == 8
    all_ids = [i for h in histories for values in h.values() for i in values]
    assert await _residue(factory, all_ids) == []


async def test_files_and_vectors_wait_for_the_store_and_are_finished_later(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "nurse", 7)
    history = await _chat_history(factory, store, settings.files_path, await add_user(factory, "n", "nurse"), words="x")
    clock.advance(timedelta(days=8))
    # The vector store is down: the rows go, the file and vectors stay queued (not forgotten).
    report = await run_purge(factory, None, settings)
    attachment_id = history["attachments"][0]
    assert report.conversations == 1 and report.files_and_vectors.left_pending == 1
    assert await store.count(document_id=attachment_id) == 3
    report = await run_purge(factory, store, settings)
    assert report.files_and_vectors.files == 1 and report.files_and_vectors.vectors == 3
    assert await store.count(document_id=attachment_id) == 0
    assert await _residue(factory, [attachment_id]) == []


async def test_a_hold_placed_during_the_purge_wins(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "nurse", 7)
    nurse = await add_user(factory, "nina", "nurse")
    conversations = [await add_conversation(factory, nurse) for _ in range(3)]
    clock.advance(timedelta(days=8))
    placed: list[str] = []

    async def hold_the_batch(candidates: Any) -> None:
        if not placed:  # after the purge chose its first batch, before it deletes it
            async with transaction(factory) as session:
                await place_hold(session, subject_type="conversation", subject_id=candidates[0], reason="r",
                                 case_reference="C-1", now=clock.now(), context=ADMIN_CTX)
            placed.append(candidates[0])

    report = await run_purge(factory, store, settings, batch_size=1, before_each_delete=hold_the_batch)
    assert report.conversations == 2 and report.held_skipped == set(placed)
    async with factory() as session:
        assert await session.get(Conversation, placed[0]) is not None
        skip = (await session.execute(select(AuditEvent).where(AuditEvent.action == "hold.skip"))).scalars().one()
        for conversation_id in set(conversations) - set(placed):
            assert await session.get(Conversation, conversation_id) is None
    assert skip.object_ids == placed and skip.detail["path"] == "purge"


@pytest.mark.parametrize("ttl_days", [10])
async def test_expired_documents_are_purged_from_every_store(
    factory: async_sessionmaker[AsyncSession], any_store: Any, settings_factory: Any, database_url: str, ttl_days: int
) -> None:
    store = any_store
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    async with transaction(factory) as session:
        collection = Collection(name="Policies", document_ttl_days=ttl_days)
        session.add(collection)
        await session.flush()
        docs = []
        for name in ("old", "fresh"):
            doc = Document(collection_id=collection.id, filename=f"{name}.txt", content_hash=name, status="indexed",
                           created_at=T0 if name == "old" else T0 + timedelta(days=9))
            session.add(doc)
            await session.flush()
            path = settings.files_path / "documents" / doc.id / f"{name}.txt"
            path.parent.mkdir(parents=True)
            path.write_text(name)
            doc.storage_path = str(path)  # an absolute path under files_path is accepted too
            session.add(DocumentChunk(id=f"{doc.id}:0", document_id=doc.id, ordinal=0, text=f"{name} text", content_hash="h"))
            docs.append(doc.id)
        collection_id = collection.id
    for doc_id in docs:
        await put_vectors(store, doc_id, collection_id)
    clock.advance(timedelta(days=11))
    report = await run_purge(factory, store, settings)
    assert report.documents == {"documents": 1, "chunks": 1, "expiry_set": 2}
    old, fresh = docs
    assert await store.count(document_id=old) == 0 and await store.count(document_id=fresh) == 3
    assert not (settings.files_path / "documents" / old).exists()
    assert (settings.files_path / "documents" / fresh / "fresh.txt").exists()
    assert await _residue(factory, [old, "old text"]) == []
    async with factory() as session:
        kept = await session.get(Document, fresh)
        assert kept is not None and kept.expires_at == T0 + timedelta(days=19)


async def test_a_purge_never_removes_audit_records_younger_than_audit_retention(
    factory: async_sessionmaker[AsyncSession], store: Any, settings_factory: Any, database_url: str
) -> None:
    clock = MovableClock(T0)
    settings = settings_factory(database_url=database_url, clock=clock)
    await add_policy(factory, "nurse", 7)
    await add_conversation(factory, await add_user(factory, "n", "nurse"))
    await run_purge(factory, store, settings)  # writes a receipt at T0
    clock.advance(timedelta(days=400))
    await run_purge(factory, store, settings)
    async with factory() as session:
        count = (await session.execute(text("SELECT count(*) FROM audit_events"))).scalar_one()
        assert count >= 3 and (await verify_chain(session)).ok
