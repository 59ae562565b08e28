"""`enclave ingest` through the real command: a folder tree, skipping unchanged files, failures listed at the end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import func, select

from portal.cli import main
from portal.db.engine import make_engine, make_session_factory
from portal.db.models import Collection, Document
from rag.store import StoreConfig, open_store

TOPICS = ["cells", "forces", "ecosystems", "matter", "energy", "weather", "volcanoes", "magnets"]


def write_tree(root: Path) -> None:
    for grade in (6, 7, 8):
        for topic in TOPICS:
            path = root / f"grade-{grade}" / f"{topic}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# Grade {grade}: {topic}\n\nStudents in grade {grade} study {topic} for three weeks, "
                            f"with a lab report on {topic} due at the end of the unit.\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "broken.txt").write_bytes(b"\x7fELF\x02\x01" + bytes(range(256)) * 8)


async def _state(database_url: str, data_dir: Path) -> tuple[dict[str, str], int, int]:
    engine = make_engine(database_url)
    try:
        async with make_session_factory(engine)() as session:
            docs = dict((await session.execute(select(Document.filename, Document.status))).all())
            collections = await session.scalar(select(func.count()).select_from(Collection)) or 0
    finally:
        await engine.dispose()
    store = open_store(StoreConfig(path=str(data_dir / "vectors")))
    await store.ensure_ready()
    try:
        vectors = await store.count()
    finally:
        await store.close()
    return docs, collections, vectors


def test_ingest_loads_a_tree_skips_unchanged_and_reports_failures(tmp_path: Path, database_url: str) -> None:
    tree = tmp_path / "curriculum"
    write_tree(tree)
    data_dir = tmp_path / "data"
    env = {"ENCLAVE_DATABASE_URL": database_url, "ENCLAVE_DATA_DIR": str(data_dir), "ENCLAVE_EMBEDDED_LLM": "false",
           "ENCLAVE_EMBEDDED_IDP": "false", "ENCLAVE_WORKERS": "1"}
    runner = CliRunner()

    missing = runner.invoke(main, ["ingest", str(tree), "--collection", "Curriculum"], env=env)
    assert missing.exit_code == 2 and "no collection named 'Curriculum'" in missing.output

    first = runner.invoke(main, ["ingest", str(tree), "--collection", "Curriculum", "--create"], env=env)
    assert first.exit_code == 1, first.output  # one bad file
    assert "25 file(s) found: 24 new, 0 changed, 0 unchanged (skipped), 24 indexed, 1 failed." in first.output
    assert "broken.txt: the file is not a supported type" in first.output
    docs, collections, vectors = asyncio.run(_state(database_url, data_dir))
    assert collections == 1 and len(docs) == 24 and set(docs.values()) == {"indexed"}
    assert "grade-7/cells.md" in docs and not any(name.startswith(".git") for name in docs)
    assert vectors >= 24

    (tree / "grade-7" / "cells.md").write_text("# Grade 7: cells\n\nThe cells unit now runs for four weeks with two labs.\n")
    second = runner.invoke(main, ["ingest", str(tree), "--collection", "Curriculum"], env=env)
    assert "25 file(s) found: 0 new, 1 changed, 23 unchanged (skipped), 1 indexed, 1 failed." in second.output
    docs_after, _, vectors_after = asyncio.run(_state(database_url, data_dir))
    assert len(docs_after) == 24 and vectors_after == vectors  # one chunk each: replaced, not added


def test_ingest_while_a_portal_holds_the_embedded_store_lets_the_portal_index(
    tmp_path: Path, database_url: str, settings_factory: Any
) -> None:
    """The embedded vector store opens in one process only: the command queues, the running portal indexes."""
    from tests.conftest import free_port
    from tests.support.browser import LivePortal

    tree = tmp_path / "handbook"
    tree.mkdir()
    for n in range(3):
        (tree / f"policy-{n}.md").write_text(f"# Policy {n}\n\nStaff sign in at reception before {8 + n}:00.\n")
    data_dir = tmp_path / "data"
    port = free_port()
    portal = LivePortal(settings_factory(database_url=database_url, data_dir=data_dir, workers=1), port)
    portal.start()
    try:
        env = {**os.environ, "ENCLAVE_DATABASE_URL": database_url, "ENCLAVE_DATA_DIR": str(data_dir),
               "ENCLAVE_EMBEDDED_LLM": "false", "ENCLAVE_EMBEDDED_IDP": "false", "COLUMNS": "200"}
        # A separate process, as in real use (file locks are per process).
        result = subprocess.run(
            [str(Path(sys.executable).parent / "enclave"), "ingest", str(tree), "--collection", "Staff handbook", "--create"],
            env=env, capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 file(s) found: 3 new, 0 changed, 0 unchanged (skipped), 3 indexed, 0 failed." in result.stdout
        assert "held by a running portal" in result.stdout
    finally:
        portal.stop()
