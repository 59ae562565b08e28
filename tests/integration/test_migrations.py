"""Migrations: upgrade to head and back to base on SQLite and PostgreSQL; models and migrations agree."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from portal.db import migrate
from portal.db.engine import make_engine
from portal.db.models import Base

ENCLAVE = str(Path(sys.executable).parent / "enclave")


def _tables(url: str) -> set[str]:
    async def go() -> set[str]:
        engine = make_engine(url)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        await engine.dispose()
        return names

    return asyncio.run(go())


def _diff(url: str) -> list[object]:
    def compare(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    async def go() -> list[object]:
        engine = make_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(compare)
        await engine.dispose()
        return diff

    return asyncio.run(go())


def test_upgrade_to_head_then_downgrade_to_base(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    tables = _tables(empty_database_url)
    assert set(Base.metadata.tables) <= tables
    assert "head" in migrate.current(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) <= {"alembic_version"}
    migrate.upgrade(empty_database_url)  # and up again: downgrades leave nothing behind that blocks it
    assert set(Base.metadata.tables) <= _tables(empty_database_url)


def test_models_match_migrations(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    assert _diff(empty_database_url) == []


def test_cli_upgrade_creates_the_schema(empty_database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_")}
    env.update({"ENCLAVE_DATABASE_URL": empty_database_url, "ENCLAVE_DATA_DIR": str(tmp_path)})
    up = subprocess.run([ENCLAVE, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "users" in _tables(empty_database_url)
    current = subprocess.run([ENCLAVE, "db", "current"], env=env, capture_output=True, text=True, timeout=120)
    assert "(head)" in current.stdout
