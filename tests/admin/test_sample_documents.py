"""The quick start's sample documents: seeded once into the right collections, indexed, and answering the sample question."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from portal.access import retrieval_filter
from portal.admin.sample_documents import sample_files
from portal.db.models import Collection, Document
from portal.jobs.workers import InProcessWorkers
from portal.principal import Principal
from portal.runtime import Runtime
from portal.seed import seed_sample_data
from tests.admin.helpers import wait_for_status

NURSE_QUESTION = "How long must staff wash their hands before patient contact?"


async def test_seeding_queues_the_samples_once_and_they_answer_the_nurse_question(settings_factory: Any, database_url: str) -> None:
    settings = settings_factory(database_url=database_url, workers=0)
    await seed_sample_data(settings)
    await seed_sample_data(settings)  # idempotent
    runtime = Runtime.create(settings)
    await runtime.start()
    workers = InProcessWorkers(runtime, 1)
    workers.start()
    runtime.jobs = workers
    try:
        async with runtime.db() as session:
            rows = (await session.execute(select(Document.id, Document.filename, Collection.name).join(Collection))).all()
        assert len(rows) == len(sample_files()) == 5
        placed = {filename: collection for _, filename, collection in rows}
        assert placed["hand-hygiene-policy.md"] == "Clinical policies"
        assert placed["grade-7-science-syllabus.md"] == "Curriculum"
        assert placed["code-of-conduct.html"] == "Staff handbook"
        found = await wait_for_status(runtime, [r[0] for r in rows], {"indexed", "failed"}, timeout=120)
        assert {d.status for d in found.values()} == {"indexed"}, [(d.filename, d.error) for d in found.values()]

        nurse = Principal(user_id="n", display_name="Noah", email=None, roles=frozenset({"nurse"}), session_hash="x")
        async with runtime.db() as session:
            access = await retrieval_filter(session, nurse, runtime.clock.now())
        embedder = await runtime.wait_for_embedder()
        assert runtime.store is not None
        hits = (await runtime.store.search(access, 3, dense=await embedder.aembed_query(NURSE_QUESTION))).dense
        assert hits and "40 seconds" in hits[0].text
        titles = {found[h.document_id].filename for h in hits}
        assert "grade-7-science-syllabus.md" not in titles  # a nurse cannot read the curriculum
    finally:
        await runtime.stop()
    await seed_sample_data(settings)
    async with runtime.db() as session:
        assert len((await session.execute(select(Document.id))).all()) == 5
