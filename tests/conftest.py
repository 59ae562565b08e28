"""Shared fixtures: real databases (SQLite always, PostgreSQL when ENCLAVE_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Sign-in through a real identity provider for every area: see tests/support/auth.py.
pytest_plugins = ["tests.support.auth_fixtures", "tests.support.llm", "tests.support.browser"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_URL = os.environ.get("ENCLAVE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("ENCLAVE_TEST_REDIS_URL")
PG_SKIP_REASON = "PostgreSQL tests need ENCLAVE_TEST_DATABASE_URL (e.g. postgresql://root@127.0.0.1:5432/test)"
REDIS_SKIP_REASON = "Redis tests need ENCLAVE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_admin_dsn() -> str:
    assert PG_URL
    return PG_URL.replace("postgresql+asyncpg://", "postgresql://").replace("postgres://", "postgresql://")


def _pg_url_for(dbname: str) -> str:
    base, _, _ = _pg_admin_dsn().rpartition("/")
    return f"{base}/{dbname}".replace("postgresql://", "postgresql+asyncpg://", 1)


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def pg_create_database(template: str | None = None) -> str:
    name = f"enclave_t_{uuid.uuid4().hex[:12]}"
    sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    asyncio.run(_pg_exec(sql))
    return name


def pg_drop_database(name: str) -> None:
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Migrate once per session; each test gets a copy (a file copy for SQLite, TEMPLATE clone for PostgreSQL)."""
    from portal.db import migrate

    templates: dict[str, Any] = {}
    sqlite_file = tmp_path_factory.mktemp("tpl") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{sqlite_file}")
    templates["sqlite"] = sqlite_file
    pg_template = None
    if PG_URL:
        pg_template = pg_create_database()
        migrate.upgrade(_pg_url_for(pg_template))
        templates["postgresql"] = pg_template
    yield templates
    if pg_template:
        pg_drop_database(pg_template)


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql" and not PG_URL:
        pytest.skip(PG_SKIP_REASON)
    return str(request.param)


@pytest.fixture
def database_url(db_backend: str, _migrated_templates: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the parametrized backend, private to this test."""
    if db_backend == "sqlite":
        target = tmp_path / "enclave.db"
        shutil.copy(_migrated_templates["sqlite"], target)
        yield f"sqlite+aiosqlite:///{target}"
        return
    name = pg_create_database(template=_migrated_templates["postgresql"])
    try:
        yield _pg_url_for(name)
    finally:
        pg_drop_database(name)


@pytest.fixture
def empty_database_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database of the parametrized backend."""
    if db_backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = pg_create_database()
    try:
        yield _pg_url_for(name)
    finally:
        pg_drop_database(name)


@pytest.fixture
def settings_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    from portal.settings import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "embedded_idp": False,
            "embedded_llm": False,
            "seed_sample_data": False,
        }
        values.update(overrides)
        return Settings(**values)

    return make
