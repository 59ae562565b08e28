"""`enclave backup DIR` and `enclave restore DIR`: the database, the embedded vector store and the uploaded files.

The database: PostgreSQL through `pg_dump -Fc` / `pg_restore` (connection details travel in PG* variables, never
on a command line), SQLite through its online backup API. The embedded vector store (a Qdrant Edge shard) is a
directory that one process locks: the backup opens it itself, which both proves that no portal or worker is
writing and keeps them out while it copies; so stop them first. A Qdrant server is snapshotted through its own
API (README.md, Deploy: Backup and restore); this command then keeps the database and files and says so. Files are content-addressed,
so restoring them into a folder that already has some is safe.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url

from portal.settings import Settings

FORMAT = 1
MANIFEST = "manifest.json"
PG_DUMP_FILE = "database.dump"
SQLITE_FILE = "database.sqlite3"


class BackupError(click.ClickException):
    """A backup or restore that cannot go on; the message says what to do."""


@dataclass(frozen=True)
class PgTarget:
    env: dict[str, str]  # PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE
    database: str


def pg_target(database_url: str) -> PgTarget:
    url = make_url(database_url)
    env = {"PGHOST": url.host or "localhost", "PGPORT": str(url.port or 5432), "PGDATABASE": url.database or ""}
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    ssl = url.query.get("ssl") or url.query.get("sslmode")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    return PgTarget(env=env, database=url.database or "")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (PostgreSQL client tools, the same major version as the server)")
    return path


def _run_pg(argv: list[str], target: PgTarget) -> None:
    env = {**os.environ, **target.env}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed ({result.returncode}): {result.stderr.strip()[-800:]}")


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith(".upload-")) if root.exists() else 0


def _store_config(settings: Settings) -> Any:
    from rag.store import StoreConfig

    return StoreConfig(path=str(settings.vector_path), collection_name=settings.qdrant_collection,
                       dim=settings.embedding_dim, backend="edge")


async def _with_edge_store(settings: Settings, action: Any) -> int:
    """Open the Edge shard (its lock keeps every portal and worker out), run `action(shard_dir)`, return the count."""
    from rag.errors import StoreError
    from rag.store_edge import EdgeVectorStore

    store = EdgeVectorStore(_store_config(settings))
    try:
        await store.ensure_ready()
    except StoreError as exc:
        if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
            raise BackupError("the embedded vector store is open in another process: stop the portal and any "
                              "`enclave worker`/`enclave ingest` first") from None
        raise
    try:
        points = await store.count()
        await asyncio.to_thread(action, settings.vector_path / settings.qdrant_collection)
        return points
    finally:
        await store.close()


async def _edge_point_count(settings: Settings) -> int:
    return await _with_edge_store(settings, lambda _dir: None)


_BLOCK = 1 << 16


def sparse_copy(source: str, target: str) -> str:
    """Copy a file, leaving holes where the source reads as zeros.

    Qdrant preallocates its storage and WAL files (32 MB each, mostly holes): a plain copy of a shard with six
    documents writes 190 MB to disk, this one 1.6 MB.
    """
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(_BLOCK):
            if block.count(0) == len(block):
                dst.seek(len(block), os.SEEK_CUR)
            else:
                dst.write(block)
        dst.truncate()
    shutil.copystat(source, target)
    return target


def copy_shard(source: Path, target: Path) -> None:
    shutil.copytree(source, target, copy_function=sparse_copy)


def backup(settings: Settings, destination: Path) -> dict[str, Any]:
    """Write a backup into `destination` (a new or empty folder); returns the manifest it wrote."""
    from portal.db import migrate

    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty: back up into a new folder")
    destination.mkdir(parents=True, exist_ok=True)
    database_url = settings.resolved_database_url
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "schema_revision": migrate.current(database_url),
        "seconds": {},
    }
    # Vectors first: opening the shard fails at once when a portal is still running, before anything is written.
    started = time.monotonic()
    if settings.qdrant_url is None:
        points = asyncio.run(_with_edge_store(settings, lambda shard: copy_shard(shard, destination / "vectors")))
        manifest["vectors"] = {"backend": "edge", "included": True, "collection": settings.qdrant_collection,
                               "points": points}
    else:
        manifest["vectors"] = {"backend": "qdrant-server", "included": False, "collection": settings.qdrant_collection}
    manifest["seconds"]["vectors"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    if database_url.startswith("postgresql"):
        target = pg_target(database_url)
        _run_pg([_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={destination / PG_DUMP_FILE}"], target)
        manifest["database"] = {"kind": "postgresql", "file": PG_DUMP_FILE}
    else:
        source = sqlite3.connect(_sqlite_path(database_url))
        copy = sqlite3.connect(destination / SQLITE_FILE)
        try:
            source.backup(copy)  # consistent even while the portal writes
        finally:
            copy.close()
            source.close()
        manifest["database"] = {"kind": "sqlite", "file": SQLITE_FILE}
    manifest["seconds"]["database"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    if settings.files_path.exists():
        shutil.copytree(settings.files_path, destination / "files", ignore=shutil.ignore_patterns(".upload-*"))
    manifest["files"] = _count_files(destination / "files")
    manifest["seconds"]["files"] = round(time.monotonic() - started, 3)
    # Bytes on disk: the shard's preallocated files are mostly holes.
    manifest["bytes"] = sum(p.stat().st_blocks * 512 for p in destination.rglob("*") if p.is_file())
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _database_has_tables(database_url: str) -> bool:
    if database_url.startswith("postgresql"):
        return _pg_has_tables(database_url)
    path = _sqlite_path(database_url)
    if not path.exists():
        return False
    conn = sqlite3.connect(path)
    try:
        return bool(conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    finally:
        conn.close()


def _pg_has_tables(database_url: str) -> bool:
    import asyncpg

    async def check() -> bool:
        url = make_url(database_url)
        conn = await asyncpg.connect(
            host=url.host or "localhost", port=url.port or 5432, user=url.username, password=url.password,
            database=url.database, ssl=url.query.get("ssl"),
        )
        try:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"))
        finally:
            await conn.close()

    return asyncio.run(check())


def restore(settings: Settings, source: Path, *, replace: bool = False) -> dict[str, Any]:
    """Restore a backup written by `backup` into the configured database, vector store and files folder."""
    from portal.db import migrate

    manifest_path = source / MANIFEST
    if not manifest_path.exists():
        raise BackupError(f"{source} holds no {MANIFEST}: not an Enclave backup")
    manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"backup format {manifest.get('format')} is not supported (expected {FORMAT})")
    database_url = settings.resolved_database_url
    kind = manifest["database"]["kind"]
    if kind != ("postgresql" if database_url.startswith("postgresql") else "sqlite"):
        raise BackupError(f"this backup holds a {kind} database; ENCLAVE_DATABASE_URL names another kind")
    vectors = manifest["vectors"]
    shard_dir = settings.vector_path / settings.qdrant_collection
    if vectors["included"] and settings.qdrant_url is not None:
        raise BackupError("this backup holds an embedded vector store; ENCLAVE_QDRANT_URL names a server")
    if not replace:
        if _database_has_tables(database_url):
            raise BackupError("the database is not empty: restore into a new database, or pass --replace")
        if vectors["included"] and shard_dir.exists() and any(shard_dir.iterdir()):
            raise BackupError(f"{shard_dir} is not empty: pass --replace to overwrite it")
    if vectors["included"] and shard_dir.exists():
        asyncio.run(_edge_point_count(settings))  # refuses while a portal or worker holds the shard
    seconds: dict[str, float] = {}

    started = time.monotonic()
    if kind == "postgresql":
        argv = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        if replace:
            argv += ["--clean", "--if-exists"]
        target = pg_target(database_url)
        _run_pg([*argv, f"--dbname={target.database}", str(source / manifest["database"]["file"])], target)
    else:
        path = _sqlite_path(database_url)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / manifest["database"]["file"], path)
    seconds["database"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    if vectors["included"]:
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        shard_dir.parent.mkdir(parents=True, exist_ok=True)
        copy_shard(source / "vectors", shard_dir)
        points = asyncio.run(_edge_point_count(settings))
        if points != vectors["points"]:
            raise BackupError(f"the restored vector store holds {points} points, the backup {vectors['points']}")
    seconds["vectors"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    if (source / "files").exists():
        shutil.copytree(source / "files", settings.files_path, dirs_exist_ok=True)
    seconds["files"] = round(time.monotonic() - started, 3)

    started = time.monotonic()
    migrate.upgrade(database_url)  # a backup from an older version comes up to this version's schema
    seconds["migrate"] = round(time.monotonic() - started, 3)
    return {**manifest, "restored_seconds": seconds}


def _settings() -> Settings:
    from portal.cli import _settings as load

    return load()


@click.command("backup")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
def backup_command(destination: Path) -> None:
    """Back up the database, the embedded vector store and the uploaded files into a new folder.

    Stop the portal and workers first when the vector store is the embedded one (the command refuses
    otherwise); with PostgreSQL and a Qdrant server the portal may keep serving.
    """
    started = time.monotonic()
    manifest = backup(_settings(), destination)
    if not manifest["vectors"]["included"]:
        click.echo("vectors: a Qdrant server holds them; take a snapshot through its API (README.md, Deploy: Backup and restore)", err=True)
    click.echo(f"backup written to {destination} in {time.monotonic() - started:.1f} s "
               f"({manifest['bytes'] / 1e6:.1f} MB, {manifest['files']} file(s), "
               f"{manifest['vectors'].get('points', '?')} vector(s))")


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite a database and vector store that already hold data.")
def restore_command(source: Path, replace: bool) -> None:
    """Restore a backup made by `enclave backup` (stop the portal and workers first)."""
    started = time.monotonic()
    result = restore(_settings(), source, replace=replace)
    if not result["vectors"]["included"]:
        click.echo("vectors: not in this backup; recover the Qdrant snapshot through its API (README.md, Deploy: Backup and restore)", err=True)
    click.echo(f"restored {source} in {time.monotonic() - started:.1f} s "
               f"(schema was {result['schema_revision'] or 'empty'}, now up to date)")
