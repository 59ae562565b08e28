"""Real documents for chat tests: collections, readers, and documents parsed, chunked, embedded and indexed."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from sqlalchemy import select

from portal.db.engine import transaction
from portal.db.models import Collection, CollectionAccess, Document, DocumentChunk, User
from portal.principal import Principal
from portal.runtime import Runtime
from portal.settings import Settings
from rag.chunk import chunk_document
from rag.ingest import store_chunks
from rag.parse import parse_document
from rag.sparse import Bm25Encoder

HAND_HYGIENE_POLICY = """# Hand hygiene policy

## Scope

This policy applies to every nurse, doctor and healthcare assistant on the wards of the hospital.

## Procedure

Staff must wash their hands with soap and water for at least 40 seconds before and after every patient contact.
Alcohol hand rub may be used instead when hands are not visibly dirty; rub for at least 20 seconds.

## Gloves

Gloves do not replace hand washing. Remove gloves and wash hands after each patient.
"""

ALGEBRA_GUIDE = """# Year 9 algebra assessment guide

## Marking

The Year 9 algebra test is marked with the Zebra rubric: four levels, from emerging to exceeding.
Teachers moderate ten percent of the scripts with a colleague before grades are released.
"""


@dataclass(frozen=True)
class IndexedDocument:
    document_id: str
    collection_id: str
    chunk_ids: list[str]
    title: str


async def add_collection(runtime: Runtime, name: str, readers: tuple[str, ...]) -> str:
    async with transaction(runtime.db) as session:
        existing = (await session.execute(select(Collection).where(Collection.name == name))).scalar_one_or_none()
        if existing is not None:
            return existing.id
        collection = Collection(name=name, description=name)
        session.add(collection)
        await session.flush()
        for role in readers:
            session.add(CollectionAccess(collection_id=collection.id, role=role))
        return collection.id


async def add_document(runtime: Runtime, collection_id: str, filename: str, text: str) -> IndexedDocument:
    """Index a document the way the admin pipeline does: rows in the database, vectors in the store."""
    embedder = await runtime.wait_for_embedder()
    assert runtime.store is not None
    document_id = uuid.uuid4().hex
    parsed = parse_document(text.encode(), filename)
    chunks = chunk_document(parsed, document_id, collection_id, 1, embedder.count_tokens, embedder.max_chunk_tokens)
    await store_chunks(chunks, embedder, runtime.store, Bm25Encoder())
    async with transaction(runtime.db) as session:
        session.add(
            Document(
                id=document_id, collection_id=collection_id, title=parsed.title, filename=filename,
                mime_type="text/markdown", size_bytes=len(text), content_hash=hashlib.sha256(text.encode()).hexdigest(),
                status="indexed", version=1, chunk_count=len(chunks),
            )
        )
        await session.flush()
        session.add_all(
            DocumentChunk(id=c.chunk_id, document_id=document_id, version=1, ordinal=c.ordinal, text=c.text,
                          section=c.section or None, page=c.page, token_count=c.token_count, content_hash=c.content_hash)
            for c in chunks
        )
    return IndexedDocument(document_id, collection_id, [c.chunk_id for c in chunks], parsed.title)


async def add_person(runtime: Runtime, roles: set[str], name: str = "Test Person") -> Principal:
    user_id = uuid.uuid4().hex
    async with transaction(runtime.db) as session:
        session.add(User(id=user_id, issuer="https://idp.test", subject=user_id, email=f"{user_id}@example.org",
                         display_name=name))
    return Principal(user_id=user_id, display_name=name, email=f"{user_id}@example.org", roles=frozenset(roles),
                     session_hash="0" * 64)


async def sample_library(runtime: Runtime) -> tuple[IndexedDocument, IndexedDocument]:
    """A clinical policy nurses may read and an algebra guide only teachers may read."""
    clinical = await add_collection(runtime, "Clinical policies", ("nurse", "admin"))
    curriculum = await add_collection(runtime, "Curriculum", ("teacher", "admin"))
    hygiene = await add_document(runtime, clinical, "hand-hygiene.md", HAND_HYGIENE_POLICY)
    algebra = await add_document(runtime, curriculum, "algebra.md", ALGEBRA_GUIDE)
    return hygiene, algebra


async def seed_library_before_start(settings: Settings) -> tuple[IndexedDocument, IndexedDocument]:
    """Index the sample library with a runtime of its own, closed before the app opens the same store.

    The app under test runs its event loop in another thread; its store and pools belong to that loop, so tests
    must not index through `app.state.runtime` from the test's loop.
    """
    runtime = Runtime.create(settings)
    await runtime.start()
    try:
        return await sample_library(runtime)
    finally:
        await runtime.stop()
