"""Document lifetimes: a collection's TTL or a document's own date; past it, retrieval no longer returns it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.access import retrieval_filter
from portal.db.engine import transaction
from portal.db.models import AuditEvent, Collection, CollectionAccess, Document
from portal.governance.retention import PolicyError, set_collection_ttl, set_document_expiry
from portal.principal import Principal
from tests.governance.conftest import ADMIN_CTX, T0

NURSE = Principal(user_id="n1", display_name="N", email=None, roles=frozenset({"nurse"}), session_hash="x" * 64)


async def _collection_with_documents(factory: async_sessionmaker[AsyncSession]) -> tuple[str, list[str]]:
    async with transaction(factory) as session:
        collection = Collection(name="Clinical")
        session.add(collection)
        await session.flush()
        session.add(CollectionAccess(collection_id=collection.id, role="nurse"))
        docs = [Document(collection_id=collection.id, filename=f"{i}.pdf", content_hash=str(i),
                         created_at=T0 + timedelta(days=i)) for i in range(3)]
        session.add_all(docs)
        await session.flush()
        return collection.id, [d.id for d in docs]


async def test_a_collection_lifetime_stops_retrieval_of_old_documents(factory: async_sessionmaker[AsyncSession]) -> None:
    collection_id, docs = await _collection_with_documents(factory)
    async with transaction(factory) as session:
        stamped = await set_collection_ttl(session, collection_id=collection_id, days=30, now=T0, context=ADMIN_CTX)
    assert stamped == 3
    async with factory() as session:
        before = await retrieval_filter(session, NURSE, T0 + timedelta(days=29))
        after = await retrieval_filter(session, NURSE, T0 + timedelta(days=31, hours=1))
        event = (await session.execute(select(AuditEvent))).scalars().one()
    assert before.excluded_document_ids == frozenset()
    assert after.excluded_document_ids == {docs[0], docs[1]}
    assert event.action == "retention.collection_ttl_set" and event.detail["after"] == 30


async def test_one_documents_expiry_date(factory: async_sessionmaker[AsyncSession]) -> None:
    _, docs = await _collection_with_documents(factory)
    async with transaction(factory) as session:
        await set_document_expiry(session, document_id=docs[2], expires_at=T0 + timedelta(days=1), now=T0, context=ADMIN_CTX)
    async with factory() as session:
        assert (await retrieval_filter(session, NURSE, T0 + timedelta(days=2))).excluded_document_ids == {docs[2]}
    async with transaction(factory) as session:
        with pytest.raises(PolicyError):
            await set_collection_ttl(session, collection_id="nope", days=5, now=T0, context=ADMIN_CTX)
