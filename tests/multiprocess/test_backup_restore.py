"""`enclave backup` and `enclave restore` as real processes: after a wipe, the same question gets the same passages.

Index the sample documents, retrieve for a fixed question (the chat's retrieval: the
person's readable collections from the database, hybrid search in the vector store), back up, wipe the database
and the data folder, restore into a NEW database and a NEW data folder, retrieve again.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portal.admin.sample_documents import SAMPLE_DOCS_DIR
from portal.db import migrate
from tests.conftest import PG_SKIP_REASON, PG_URL, _pg_url_for, pg_create_database, pg_drop_database
from tests.support.live import ENCLAVE, clean_environment

QUESTION = "How long should staff rub their hands with alcohol gel?"
COLLECTION = "Clinical policies"
READER_ROLE = "nurse"

pytestmark = [pytest.mark.timeout(300)]


def _enclave(args: list[str], env: dict[str, str], *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ENCLAVE, *args], env=env, capture_output=True, text=True, timeout=240, check=False)
    if ok:
        assert result.returncode == 0, f"enclave {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return clean_environment(ENCLAVE_DATABASE_URL=database_url, ENCLAVE_DATA_DIR=str(data_dir),
                             ENCLAVE_EMBEDDED_IDP="false", ENCLAVE_EMBEDDED_LLM="false",
                             ENCLAVE_SEED_SAMPLE_DATA="false")


async def _ask(database_url: str, data_dir: Path, *, index_first: bool = False) -> list[tuple[str, str, int]]:
    """What the chat retrieves for QUESTION as a nurse: (chunk id, document file name, ordinal), best first.

    With `index_first`, this process first loads portal/sample_docs into the collection (what `enclave ingest`
    does, in-process so the embedding model is loaded once for the whole test).
    """
    from sqlalchemy import select

    from portal.access import retrieval_filter
    from portal.db.models import Collection, CollectionAccess, Document
    from portal.principal import Principal
    from portal.runtime import Runtime
    from portal.settings import Settings
    from rag.retrieve import Retriever

    settings = Settings(database_url=database_url, data_dir=data_dir, embedded_idp=False, embedded_llm=False,
                        seed_sample_data=False, workers=1 if index_first else 0, purge_in_process=False)
    runtime = Runtime.create(settings)
    await runtime.start()
    try:
        if index_first:
            from rich.console import Console

            from portal.admin.ingest_cli import ingest_folder

            report = await ingest_folder(runtime, SAMPLE_DOCS_DIR, COLLECTION, create=True, wait=True,
                                         console=Console(quiet=True))
            assert report.indexed == report.scanned > 0 and not report.failures, report
        async with runtime.db() as session:
            if not (await session.execute(select(CollectionAccess).limit(1))).first():
                (collection_id,) = (await session.execute(select(Collection.id).where(Collection.name == COLLECTION))).one()
                session.add(CollectionAccess(collection_id=collection_id, role=READER_ROLE))
                await session.commit()
            nurse = Principal(user_id="u-nurse", display_name="Nurse", email=None, roles=frozenset({READER_ROLE}),
                              session_hash="x")
            access = await retrieval_filter(session, nurse, runtime.clock.now())
            names = dict((await session.execute(select(Document.id, Document.filename))).tuples().all())
        assert runtime.store is not None
        hits = await Retriever(await runtime.wait_for_embedder(), runtime.store).search(QUESTION, access, top_k=6)
        return [(hit.chunk_id, names[hit.document_id], hit.ordinal) for hit in hits]
    finally:
        await runtime.stop()


@pytest.fixture
def pg_databases() -> Iterator[list[str]]:
    if not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    names: list[str] = []
    yield names
    for name in names:
        pg_drop_database(name)


def _timed(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = _enclave(args, env)
    return time.monotonic() - started, result


def _run_backup_restore_cycle(
    tmp_path: Path, source_url: str, target_url: str, wipe: Any, *, check_refusal: bool = False
) -> dict[str, Any]:
    data, restored_data, backup_dir = tmp_path / "data", tmp_path / "restored-data", tmp_path / "backup"
    env = _env(source_url, data)  # source_url: a migrated database
    before = asyncio.run(_ask(source_url, data, index_first=True))
    assert len(before) >= 3 and any("hand-hygiene" in name for _chunk, name, _ord in before), before

    backup_s, made = _timed(["backup", str(backup_dir)], env)
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["vectors"]["included"] and manifest["vectors"]["points"] > 0
    assert manifest["files"] == len([p for p in SAMPLE_DOCS_DIR.rglob("*") if p.is_file()])
    assert "backup written" in made.stdout

    wipe()
    shutil.rmtree(data)
    restored_env = _env(target_url, restored_data)
    restore_s, _ = _timed(["restore", str(backup_dir)], restored_env)
    after = asyncio.run(_ask(target_url, restored_data))
    assert after == before, f"before: {before}\nafter:  {after}"
    # The database is at this version's schema, and every stored file is back.
    assert migrate.current(target_url).endswith("(head)")
    assert len([p for p in (restored_data / "files").rglob("*") if p.is_file()]) == manifest["files"]
    # Qdrant preallocates 32 MB files that are mostly holes; the copies keep the holes.
    shard = restored_data / "vectors" / "enclave_chunks"
    assert sum(p.stat().st_blocks * 512 for p in shard.rglob("*") if p.is_file()) < 20_000_000
    if check_refusal:
        # Restoring again over data is refused without --replace.
        again = _enclave(["restore", str(backup_dir)], restored_env, ok=False)
        assert again.returncode != 0 and "not empty" in again.stderr
    return {"backup_s": backup_s, "restore_s": restore_s, "bytes": manifest["bytes"], "hits": len(after)}


def test_postgresql_backup_and_restore_give_the_same_citations(
    tmp_path: Path, pg_databases: list[str], _migrated_templates: dict[str, Any]
) -> None:
    source = pg_create_database(template=_migrated_templates["postgresql"])
    pg_databases.append(source)
    target = pg_create_database()  # a fresh, empty database, as a DBA would create for the restore
    pg_databases.append(target)
    figures = _run_backup_restore_cycle(
        tmp_path, _pg_url_for(source), _pg_url_for(target), wipe=lambda: pg_drop_database(source)
    )
    print(f"postgresql backup/restore: {json.dumps(figures)}")


def test_sqlite_backup_and_restore_give_the_same_citations(tmp_path: Path, _migrated_templates: dict[str, Any]) -> None:
    source_file = tmp_path / "data" / "enclave.db"
    target_file = tmp_path / "restored-data" / "enclave.db"
    source_file.parent.mkdir(parents=True)
    shutil.copy(_migrated_templates["sqlite"], source_file)
    figures = _run_backup_restore_cycle(
        tmp_path, f"sqlite+aiosqlite:///{source_file}", f"sqlite+aiosqlite:///{target_file}",
        wipe=lambda: source_file.unlink(), check_refusal=True,
    )
    print(f"sqlite backup/restore: {json.dumps(figures)}")


async def test_backup_refuses_while_a_process_holds_the_embedded_store(
    tmp_path: Path, _migrated_templates: dict[str, Any]
) -> None:
    from rag.store import StoreConfig, open_store

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(_migrated_templates["sqlite"], data / "enclave.db")
    env = _env(f"sqlite+aiosqlite:///{data / 'enclave.db'}", data)
    store = open_store(StoreConfig(path=str(data / "vectors"), collection_name="enclave_chunks"))
    await store.ensure_ready()  # what a running portal holds
    try:
        result = await asyncio.to_thread(_enclave, ["backup", str(tmp_path / "backup")], env, ok=False)
    finally:
        await store.close()
    assert result.returncode != 0
    assert "stop the portal" in result.stderr
    assert not (tmp_path / "backup" / "manifest.json").exists()
