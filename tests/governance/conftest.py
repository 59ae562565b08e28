"""Governance fixtures: a real migrated database (SQLite, and PostgreSQL when configured) and people in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit import AuditContext
from portal.db.engine import make_engine, make_session_factory, transaction
from portal.db.models import Conversation, Message, RetentionPolicy, RoleAssignment, User

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ADMIN_CTX = AuditContext(user_id="admin0", roles=("admin",), session_hash="a" * 64, client_addr="127.0.0.1")


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    await engine.dispose()


async def add_user(factory: async_sessionmaker[AsyncSession], name: str, *roles: str) -> str:
    async with transaction(factory) as session:
        user = User(display_name=name, email=f"{name}@example.org", created_at=T0)
        session.add(user)
        await session.flush()
        for role in roles:
            session.add(RoleAssignment(user_id=user.id, role=role, assigned_at=T0))
        return user.id


async def add_policy(
    factory: async_sessionmaker[AsyncSession], role: str, days: int, *, overrides_shorter: bool = False
) -> None:
    async with transaction(factory) as session:
        session.add(RetentionPolicy(role=role, conversation_days=days, overrides_shorter=overrides_shorter))


async def add_conversation(
    factory: async_sessionmaker[AsyncSession], user_id: str, *, last_activity: datetime = T0, text: str = "hello"
) -> str:
    async with transaction(factory) as session:
        conv = Conversation(user_id=user_id, title="t", created_at=last_activity - timedelta(minutes=5), updated_at=last_activity)
        session.add(conv)
        await session.flush()
        session.add(Message(conversation_id=conv.id, role="user", content=text, created_at=last_activity))
        return conv.id


async def _open(tmp_path, backend: str):  # type: ignore[no-untyped-def]
    from rag.store import StoreConfig, open_store

    vector_store = open_store(StoreConfig(path=str(tmp_path / f"vectors-{backend}"), backend=backend, dim=8))  # type: ignore[arg-type]
    await vector_store.ensure_ready()
    return vector_store


@pytest.fixture
async def store(tmp_path):  # type: ignore[no-untyped-def]
    """The embedded default vector store (Qdrant Edge), real, on disk."""
    vector_store = await _open(tmp_path, "edge")
    yield vector_store
    await vector_store.close()


@pytest.fixture(params=["edge", "qdrant-local"])
async def any_store(request, tmp_path):  # type: ignore[no-untyped-def]
    """Both vector-store code paths: Qdrant Edge and the qdrant-client (server) backend in its local mode."""
    vector_store = await _open(tmp_path, request.param)
    yield vector_store
    await vector_store.close()


async def put_vectors(store, document_id: str, collection_id: str, n: int = 3) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from rag.types import Chunk, SparseVector

    chunks = [
        Chunk(
            chunk_id=f"{document_id}:{i}", document_id=document_id, collection_id=collection_id, document_version=1,
            ordinal=i, text=f"passage {i}", title="t", section="", page=None, token_count=2, content_hash="h",
        )
        for i in range(n)
    ]
    dense = np.random.default_rng(0).random((n, 8), dtype=np.float32)
    sparse = [SparseVector(indices=(1, 2), values=(0.5, 0.5)) for _ in range(n)]
    await store.upsert(chunks, dense, sparse)
