"""Async engine and session factory for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

WRITE_OPTION = "enclave_write"  # execution option: this transaction will write
T = TypeVar("T")
P = ParamSpec("P")


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        # Let us issue BEGIN ourselves (below), instead of the driver's deferred BEGIN.
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A unit of work (`transaction()` below) takes SQLite's write lock at its start: a deferred transaction
        # that reads and then writes fails at once (SQLITE_BUSY_SNAPSHOT) when another process wrote in
        # between, whereas BEGIN IMMEDIATE waits its turn under busy_timeout. Appends to the audit chain depend
        # on this. Plain reads begin deferred: under WAL they never wait for a writer, nor make one wait.
        immediate = conn.get_execution_options().get(WRITE_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass
class _Twin:
    """An SQLite engine's plain (synchronous) twin, for units of work run whole on a worker thread (`run_unit`).

    Writers have one thread of their own (SQLite takes one writer at a time anyway) and readers a few: neither
    waits behind the other, nor behind the embedding model's work on asyncio's default executor. A writer holds
    the process's write queue while its unit runs, so it must never wait for a free thread behind reads."""

    sessions: sessionmaker[Session]
    writer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-write"))
    readers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqlite-read"))


_SQLITE_TWINS: weakref.WeakKeyDictionary[Engine, _Twin] = weakref.WeakKeyDictionary()


def make_engine(database_url: str, echo: bool = False) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1] if "///" in database_url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(database_url, echo=echo, connect_args={"timeout": 30})
        _sqlite_setup(engine.sync_engine)
        if path and path != ":memory:":
            twin = create_engine(f"sqlite:///{path}", echo=echo,
                                 connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_setup(twin)
            _SQLITE_TWINS[engine.sync_engine] = _Twin(sessionmaker(twin, expire_on_commit=False))
        return engine
    return create_async_engine(database_url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True)


def dispose_twin(engine: AsyncEngine) -> None:
    """Close the connections of an SQLite engine's plain twin (with the engine's own `dispose`)."""
    twin = _SQLITE_TWINS.pop(engine.sync_engine, None)
    if twin is not None:
        twin.writer.shutdown(wait=True)
        twin.readers.shutdown(wait=True)
        bind = twin.sessions.kw["bind"]
        assert isinstance(bind, Engine)
        bind.dispose()


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


def _twin_of(factory: async_sessionmaker[AsyncSession]) -> _Twin | None:
    bind = factory.kw.get("bind")
    return _SQLITE_TWINS.get(bind.sync_engine) if isinstance(bind, AsyncEngine) else None


def _run_on_twin(twin: sessionmaker[Session], work: Callable[[Session], T], write: bool) -> T:
    with twin() as session:
        if not write:
            return work(session)
        with session.begin():
            session.connection(execution_options={WRITE_OPTION: True})
            return work(session)


def on_async_session(plain: Callable[Concatenate[Session, P], T]) -> Callable[Concatenate[AsyncSession, P], Awaitable[T]]:
    """The async form of a function written for a plain Session (one that `run_unit` units also call): it runs in
    the caller's async session, inside its transaction, through `run_sync`. One implementation serves both."""

    async def in_async_session(session: AsyncSession, *args: P.args, **kwargs: P.kwargs) -> T:
        return await session.run_sync(plain, *args, **kwargs)

    in_async_session.__doc__ = plain.__doc__
    return in_async_session


async def run_unit(factory: async_sessionmaker[AsyncSession], work: Callable[[Session], T], *, write: bool) -> T:
    """Run `work` (plain code on a synchronous Session) as one unit of work: committed when `write`, else read only.

    On SQLite the whole unit runs on a worker thread through a plain twin of the engine: its statements reach
    SQLite directly instead of one event-loop round trip each through aiosqlite's thread, which under load made a
    few statements hold SQLite's one write lock for milliseconds (writers still queue here first, in order). On
    PostgreSQL the same code runs through the async session (`run_sync`)."""
    twin = _twin_of(factory)
    if twin is not None:
        async with _sqlite_write_turn(factory) if write else nullcontext():
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(twin.writer if write else twin.readers, _run_on_twin, twin.sessions, work, write)
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                # The thread finishes its unit of work regardless: keep this process's writers queued until it has.
                await asyncio.wait([running])
                raise
    if write:
        async with transaction(factory) as session:
            return await session.run_sync(work)
    async with factory() as session:
        return await session.run_sync(work)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any error. Every write goes through here."""
    async with _sqlite_write_turn(factory), factory() as session, session.begin():
        # Marks the connection before its BEGIN is sent: on SQLite this transaction takes the write lock at once.
        await session.connection(execution_options={WRITE_OPTION: True})
        yield session

