"""Collections: create, rename, describe, delete; which roles may read them; who manages their documents."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from portal.admin.actor import Actor, require_admin
from portal.admin.errors import BadInput, Conflict, NotFound
from portal.audit import append_audit
from portal.db.engine import transaction
from portal.db.models import (
    Collection,
    CollectionAccess,
    CollectionManager,
    Document,
    DocumentChunk,
    IngestionJob,
    User,
)
from portal.jobs.indexing import remove_file_if_unreferenced
from portal.runtime import Runtime

ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class CollectionDeleted:
    name: str
    documents: int
    chunks: int
    vectors: int
    files: int
    vectors_left: int


def _clean_name(name: str) -> str:
    cleaned = " ".join((name or "").split())
    if not cleaned:
        raise BadInput("Give the collection a name.")
    if len(cleaned) > 120:
        raise BadInput("A collection name can be at most 120 characters.")
    return cleaned


def clean_role(role: str) -> str:
    cleaned = (role or "").strip().lower()
    if not ROLE_NAME.match(cleaned):
        raise BadInput("A role is a short lower-case name such as nurse, teacher or staff.")
    return cleaned


async def _name_taken(runtime: Runtime, name: str, except_id: str | None = None) -> bool:
    async with runtime.db() as session:
        stmt = select(Collection.id).where(func.lower(Collection.name) == name.lower())
        if except_id:
            stmt = stmt.where(Collection.id != except_id)
        return (await session.execute(stmt.limit(1))).first() is not None


async def create_collection(
    runtime: Runtime, actor: Actor, name: str, description: str = "", readers: list[str] | None = None
) -> str:
    await require_admin(runtime, actor, "collection.create", "collection", [])
    cleaned = _clean_name(name)
    roles = sorted({clean_role(r) for r in readers or [] if r.strip()})
    if await _name_taken(runtime, cleaned):
        raise Conflict(f"A collection named “{cleaned}” already exists; choose another name.")
    now = runtime.clock.now()
    try:
        async with transaction(runtime.db) as session:
            collection = Collection(
                name=cleaned, description=(description or "").strip(), created_at=now, updated_at=now,
                created_by=actor.principal.user_id if await session.get(User, actor.principal.user_id) else None,
            )
            session.add(collection)
            await session.flush()
            for role in roles:
                session.add(CollectionAccess(collection_id=collection.id, role=role, granted_at=now))
            await append_audit(
                session, at=now, action="collection.create", context=actor.audit, object_type="collection",
                object_ids=[collection.id], detail={"name": cleaned, "readers": roles},
            )
    except IntegrityError:
        # Two admins creating the same name at once: the unique index decides, nothing is half-created.
        raise Conflict(f"A collection named “{cleaned}” already exists; choose another name.") from None
    return collection.id


async def update_collection(runtime: Runtime, actor: Actor, collection_id: str, name: str, description: str) -> None:
    await require_admin(runtime, actor, "collection.update", "collection", [collection_id])
    cleaned = _clean_name(name)
    if await _name_taken(runtime, cleaned, except_id=collection_id):
        raise Conflict(f"A collection named “{cleaned}” already exists; choose another name.")
    now = runtime.clock.now()
    try:
        async with transaction(runtime.db) as session:
            collection = await session.get(Collection, collection_id)
            if collection is None:
                raise NotFound("That collection does not exist.")
            before = {"name": collection.name, "description": collection.description}
            collection.name = cleaned
            collection.description = (description or "").strip()
            collection.updated_at = now
            await append_audit(
                session, at=now, action="collection.update", context=actor.audit, object_type="collection",
                object_ids=[collection_id], detail={"before": before, "name": cleaned},
            )
    except IntegrityError:
        raise Conflict(f"A collection named “{cleaned}” already exists; choose another name.") from None


async def delete_collection(runtime: Runtime, actor: Actor, collection_id: str) -> CollectionDeleted:
    """Remove the collection, its documents, stored files and every vector; refuse while a job runs on it."""
    await require_admin(runtime, actor, "collection.delete", "collection", [collection_id])
    if runtime.store is None:
        raise Conflict("The vector store is not available right now; try again shortly.")
    vectors = await runtime.store.count(collection_id=collection_id)
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        collection = await session.get(Collection, collection_id)
        if collection is None:
            raise NotFound("That collection does not exist.")
        running = await session.scalar(
            select(func.count()).select_from(IngestionJob).where(
                IngestionJob.collection_id == collection_id, IngestionJob.status == "running"
            )
        ) or 0
        if running:
            raise Conflict(
                f"{running} document(s) in “{collection.name}” are being indexed right now; wait for indexing "
                "to finish, then delete the collection."
            )
        documents = (await session.execute(select(Document.id, Document.storage_path).where(Document.collection_id == collection_id))).all()
        document_ids = [row[0] for row in documents]
        chunks = 0
        if document_ids:
            chunks = await session.scalar(
                select(func.count()).select_from(DocumentChunk).where(DocumentChunk.document_id.in_(document_ids))
            ) or 0
        paths = {row[1] for row in documents if row[1]}
        for payload in (await session.execute(select(IngestionJob.payload).where(IngestionJob.collection_id == collection_id))).scalars():
            replacement = (payload or {}).get("replacement") or {}
            if replacement.get("storage_path"):
                paths.add(replacement["storage_path"])
        name = collection.name
        # Children first: not every database cascades on delete the same way.
        await session.execute(delete(IngestionJob).where(IngestionJob.collection_id == collection_id))
        if document_ids:
            await session.execute(delete(DocumentChunk).where(DocumentChunk.document_id.in_(document_ids)))
        await session.execute(delete(Document).where(Document.collection_id == collection_id))
        await session.delete(collection)
        await append_audit(
            session, at=now, action="collection.delete", context=actor.audit, object_type="collection",
            object_ids=[collection_id],
            detail={"name": name, "documents": len(document_ids), "chunks": int(chunks), "vectors": vectors},
        )
    await runtime.store.delete_collection(collection_id)
    files = 0
    for relative in paths:
        files += int(await remove_file_if_unreferenced(runtime.db, runtime.settings.files_path, relative))
    left = await runtime.store.count(collection_id=collection_id)
    return CollectionDeleted(name, len(document_ids), int(chunks), vectors, files, left)


async def grant_read(runtime: Runtime, actor: Actor, collection_id: str, role: str) -> None:
    await require_admin(runtime, actor, "collection.grant", "collection", [collection_id])
    cleaned = clean_role(role)
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        if await session.get(Collection, collection_id) is None:
            raise NotFound("That collection does not exist.")
        if await session.get(CollectionAccess, (collection_id, cleaned)) is not None:
            raise Conflict(f"The role “{cleaned}” may already read this collection.")
        session.add(CollectionAccess(collection_id=collection_id, role=cleaned, granted_at=now))
        await append_audit(
            session, at=now, action="collection.grant", context=actor.audit, object_type="collection",
            object_ids=[collection_id], detail={"role": cleaned},
        )


async def revoke_read(runtime: Runtime, actor: Actor, collection_id: str, role: str) -> None:
    await require_admin(runtime, actor, "collection.revoke", "collection", [collection_id])
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        access = await session.get(CollectionAccess, (collection_id, role))
        if access is None:
            raise NotFound(f"The role “{role}” has no read access to this collection.")
        await session.delete(access)
        await append_audit(
            session, at=now, action="collection.revoke", context=actor.audit, object_type="collection",
            object_ids=[collection_id], detail={"role": role},
        )


async def add_manager(runtime: Runtime, actor: Actor, collection_id: str, *, role: str = "", email: str = "") -> str:
    """A manager is a role or a person (by the e-mail address they sign in with)."""
    await require_admin(runtime, actor, "collection.manager_add", "collection", [collection_id])
    if bool(role.strip()) == bool(email.strip()):
        raise BadInput("Name either a role or a person's e-mail address as manager.")
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        if await session.get(Collection, collection_id) is None:
            raise NotFound("That collection does not exist.")
        manager = CollectionManager(collection_id=collection_id)
        if role.strip():
            manager.role = clean_role(role)
            existing = select(CollectionManager.id).where(
                CollectionManager.collection_id == collection_id, CollectionManager.role == manager.role
            )
            who = {"role": manager.role}
        else:
            user = (
                await session.execute(select(User).where(func.lower(User.email) == email.strip().lower()).limit(1))
            ).scalar_one_or_none()
            if user is None:
                raise NotFound(f"Nobody with the e-mail address {email.strip()} has signed in yet.")
            manager.user_id = user.id
            existing = select(CollectionManager.id).where(
                CollectionManager.collection_id == collection_id, CollectionManager.user_id == user.id
            )
            who = {"user_id": user.id}
        if (await session.execute(existing.limit(1))).first():
            raise Conflict("They already manage this collection.")
        session.add(manager)
        await session.flush()
        await append_audit(
            session, at=now, action="collection.manager_add", context=actor.audit, object_type="collection",
            object_ids=[collection_id], detail=who,
        )
        return manager.id


async def remove_manager(runtime: Runtime, actor: Actor, collection_id: str, manager_id: str) -> None:
    await require_admin(runtime, actor, "collection.manager_remove", "collection", [collection_id])
    now = runtime.clock.now()
    async with transaction(runtime.db) as session:
        manager = await session.get(CollectionManager, manager_id)
        if manager is None or manager.collection_id != collection_id:
            raise NotFound("That manager entry does not exist.")
        detail = {"role": manager.role} if manager.role else {"user_id": manager.user_id}
        await session.delete(manager)
        await append_audit(
            session, at=now, action="collection.manager_remove", context=actor.audit, object_type="collection",
            object_ids=[collection_id], detail=detail,
        )
