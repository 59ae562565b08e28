"""Async engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Connection, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

WRITE_OPTION = "enclave_write"  # execution option: this transaction will write


def make_engine(database_url: str, echo: bool = False) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1] if "///" in database_url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # Let us issue BEGIN ourselves (below), instead of the driver's deferred BEGIN.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Connection) -> None:
            # A unit of work (`transaction()` below) takes SQLite's write lock at its start: a deferred transaction
            # that reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another process wrote in
            # between, whereas BEGIN IMMEDIATE waits its turn under busy_timeout. Appends to the audit chain depend
            # on this. Plain reads begin deferred: under WAL they never wait for a writer, nor make one wait.
            immediate = conn.get_execution_options().get(WRITE_OPTION)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_async_engine(database_url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


SQLITE_WRITE_WAIT_S = 30.0  # as long as SQLite's own busy_timeout


class _SQLiteWriteQueues:
    """One write queue per SQLite engine and event loop: this process's writers wait their turn here, in order.

    SQLite lets one writer in at a time. A writer that finds the lock taken waits in SQLite's busy handler, which
    sleeps 1, 2, 5 ... 100 ms between tries: under load (hundreds of answers streaming, each saving and sending
    heartbeats) those sleeps, not the work, made the slowest questions wait over a second. Waiting on an asyncio
    lock instead hands the database to the next writer the moment the last one commits. Other processes (the CLI
    while a portal runs) still meet at SQLite's own lock.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[int, int], asyncio.Lock] = {}

    def lock_for(self, engine: AsyncEngine) -> asyncio.Lock:
        key = (id(engine.sync_engine), id(asyncio.get_running_loop()))
        lock = self._locks.get(key)
        if lock is None:
            if len(self._locks) > 64:  # engines and loops of finished tests: locks nobody holds
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[key] = asyncio.Lock()
        return lock


_WRITE_QUEUES = _SQLiteWriteQueues()


@asynccontextmanager
async def _sqlite_write_turn(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    bind = factory.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        yield
        return
    lock = _WRITE_QUEUES.lock_for(bind)
    try:
        await asyncio.wait_for(lock.acquire(), timeout=SQLITE_WRITE_WAIT_S)
    except TimeoutError:
        raise OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked (waited for this process's "
                                                               "other writers)")) from None
    try:
        yield
    finally:
        lock.release()


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error. Every write goes through here."""
    async with _sqlite_write_turn(factory), factory() as session, session.begin():
        # Marks the connection before its BEGIN is sent: on SQLite this transaction takes the write lock at once.
        await session.connection(execution_options={WRITE_OPTION: True})
        yield session

