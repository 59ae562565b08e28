"""Test helpers for the admin area: people with roles, counts of everything an action could leave behind."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from portal.admin.actor import Actor
from portal.audit import AuditContext
from portal.db.engine import transaction
from portal.db.models import (
    AuditEvent,
    Collection,
    CollectionAccess,
    CollectionManager,
    Document,
    DocumentChunk,
    IngestionJob,
    RoleAssignment,
    User,
)
from portal.jobs import stored_files
from portal.principal import Principal
from portal.runtime import Runtime


async def make_person(runtime: Runtime, email: str, roles: list[str], name: str = "") -> Actor:
    """A real users row with role assignments, and the Principal a signed-in session would carry."""
    async with transaction(runtime.db) as session:
        user = User(email=email, display_name=name or email.split("@")[0], issuer="https://idp.test", subject=email)
        session.add(user)
        await session.flush()
        for role in roles:
            session.add(RoleAssignment(user_id=user.id, role=role))
        user_id = user.id
    principal = Principal(
        user_id=user_id, display_name=name or email, email=email, roles=frozenset(roles),
        session_hash=hashlib.sha256(email.encode()).hexdigest(),
    )
    return Actor(principal, AuditContext(user_id=user_id, roles=tuple(sorted(roles)), session_hash=principal.session_hash))


async def make_collection(runtime: Any, name: str, readers: list[str], manager_role: str | None = None) -> str:
    async with transaction(runtime.db) as session:
        collection = Collection(name=name, description="")
        session.add(collection)
        await session.flush()
        for role in readers:
            session.add(CollectionAccess(collection_id=collection.id, role=role))
        if manager_role:
            session.add(CollectionManager(collection_id=collection.id, role=manager_role))
        return collection.id


async def wait_for_job(runtime: Runtime, job_id: str, wanted: set[str], timeout: float = 30.0) -> IngestionJob:
    """Poll until the job reached one of `wanted`. A job stays `running` for a moment after its document reads
    `indexed`: the cleanup stage (dropping the old version's points) runs after the flip."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with runtime.db() as session:
            job = await session.get(IngestionJob, job_id)
        if job is not None and job.status in wanted:
            return job
        if loop.time() > deadline:
            raise AssertionError(f"job {job_id} did not reach {wanted}: {job.status if job else 'missing'}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Counts:
    collections: int
    documents: int
    chunks: int
    jobs: int
    vectors: int
    files: int


async def counts(runtime: Any) -> Counts:
    async with runtime.db() as session:
        values = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (Collection, Document, DocumentChunk, IngestionJob)
        ]
    assert runtime.store is not None
    return Counts(*(int(v or 0) for v in values), await runtime.store.count(),
                  stored_files.count_files(runtime.settings.files_path))


async def audit_actions(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db() as session:
        rows = (await session.execute(select(AuditEvent.action, AuditEvent.outcome).order_by(AuditEvent.seq))).all()
    return [(a, o) for a, o in rows]


async def wait_for_status(runtime: Runtime, document_ids: list[str], wanted: set[str], timeout: float = 90.0) -> dict[str, Any]:
    """Poll the database (as any portal process would) until every document reached one of `wanted`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with runtime.db() as session:
            rows = (await session.execute(select(Document).where(Document.id.in_(document_ids)))).scalars().all()
            found = {d.id: d for d in rows}
        if len(found) == len(document_ids) and all(d.status in wanted for d in found.values()):
            return found
        if loop.time() > deadline:
            raise AssertionError(f"documents did not reach {wanted}: {[(d.filename, d.status, d.error) for d in found.values()]}")
        await asyncio.sleep(0.1)


@dataclass
class SideView:
    """The runtime's store and settings with a database engine of the test's own event loop.

    An app under AsyncTestClient runs on another loop; its pooled aiosqlite/asyncpg connections must not be
    used from the test's loop.
    """

    db: Any
    store: Any
    settings: Any
    clock: Any
    engine: Any

    async def close(self) -> None:
        await self.engine.dispose()


def side_view(runtime: Runtime, database_url: str) -> SideView:
    from portal.db.engine import make_engine, make_session_factory

    engine = make_engine(database_url)
    return SideView(make_session_factory(engine), runtime.store, runtime.settings, runtime.clock, engine)
