"""Sample data for the embedded default: collections, who may read them, role rules and retention policies.

Idempotent: running it again changes nothing that is already there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from portal.db.engine import make_engine, make_session_factory, transaction
from portal.db.models import Collection, CollectionAccess, RetentionPolicy, RoleMappingRule
from portal.settings import Settings


@dataclass(frozen=True)
class SampleCollection:
    name: str
    description: str
    readers: tuple[str, ...]


SAMPLE_COLLECTIONS = (
    SampleCollection("Clinical policies", "Hospital clinical policies and procedures.", ("nurse", "admin")),
    SampleCollection("Curriculum", "District curriculum guides and course syllabi.", ("teacher", "admin")),
    SampleCollection("Staff handbook", "Policies that apply to every member of staff.", ("teacher", "nurse", "staff", "admin")),
)

# groups claim value -> role, as the embedded identity provider's sample people carry them.
SAMPLE_ROLE_RULES = (
    ("groups", "equals", "teachers", "teacher", "allow"),
    ("groups", "equals", "nurses", "nurse", "allow"),
    ("groups", "equals", "staff", "staff", "allow"),
    ("groups", "equals", "enclave-admins", "admin", "allow"),
    ("groups", "equals", "suspended", "*", "deny"),
)

SAMPLE_RETENTION = (("nurse", 7), ("teacher", 90), ("student", 30), ("staff", 90), ("admin", 90))


async def seed_sample_data(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    try:
        async with transaction(factory) as session:
            existing = set((await session.execute(select(Collection.name))).scalars())
            for sample in SAMPLE_COLLECTIONS:
                if sample.name in existing:
                    continue
                collection = Collection(name=sample.name, description=sample.description)
                session.add(collection)
                await session.flush()
                for role in sample.readers:
                    session.add(CollectionAccess(collection_id=collection.id, role=role))
            if not (await session.execute(select(RoleMappingRule.id).limit(1))).first():
                rules = SAMPLE_ROLE_RULES + tuple(
                    (r.claim, r.match, r.value, r.role, r.effect) for r in settings.role_rules
                )
                for position, (claim, match, value, role, effect) in enumerate(rules):
                    session.add(
                        RoleMappingRule(position=position, claim=claim, match=match, value=value, role=role, effect=effect)
                    )
            roles_with_policy = set((await session.execute(select(RetentionPolicy.role))).scalars())
            for role, days in SAMPLE_RETENTION:
                if role not in roles_with_policy:
                    session.add(RetentionPolicy(role=role, conversation_days=days))
            from portal.admin.sample_documents import queue_sample_documents_once

            await queue_sample_documents_once(session, settings)
    finally:
        await engine.dispose()
