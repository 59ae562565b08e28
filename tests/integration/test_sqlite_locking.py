"""SQLite transactions: units of work take the write lock at BEGIN; plain reads never wait for, nor block, a writer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from portal.db.engine import dispose_twin, make_engine, make_session_factory, run_unit, transaction


async def _table(path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    async with transaction(make_session_factory(engine)) as session:
        await session.execute(text("CREATE TABLE t (n INTEGER)"))
        await session.execute(text("INSERT INTO t VALUES (1)"))
    await engine.dispose()


def _try_write(path: Path) -> str:
    """What another process sees when it tries to write right now, without waiting."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (2)")
        other.execute("ROLLBACK")
        return "wrote"
    except sqlite3.OperationalError as exc:
        return str(exc)
    finally:
        other.close()


async def test_a_unit_of_work_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with transaction(make_session_factory(engine)):
            # Nothing executed yet inside the block: the BEGIN IMMEDIATE alone must hold the lock.
            assert await asyncio.to_thread(_try_write, path) == "database is locked"
        assert await asyncio.to_thread(_try_write, path) == "wrote"
    finally:
        await engine.dispose()


async def test_a_read_in_progress_does_not_block_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "read.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with make_session_factory(engine)() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
            assert session.in_transaction()
            # The read transaction is still open: under WAL a writer elsewhere proceeds at once.
            assert await asyncio.to_thread(_try_write, path) == "wrote"
            # ...and the reader's snapshot stays consistent.
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await engine.dispose()


async def test_concurrent_units_of_work_serialise_without_errors(tmp_path: Path) -> None:
    writes = 2
    path = tmp_path / "serial.db"
    await _table(path)
    engines = [make_engine(f"sqlite+aiosqlite:///{path}") for _ in range(writes)]
    try:
        async def bump(engine: object) -> None:
            factory = make_session_factory(engine)  # type: ignore[arg-type]
            for _ in range(20):
                async with transaction(factory) as session:
                    n = (await session.execute(text("SELECT max(n) FROM t"))).scalar_one()
                    await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n + 1})

        await asyncio.gather(*(bump(engine) for engine in engines))
        async with make_session_factory(engines[0])() as session:
            values = list((await session.execute(text("SELECT n FROM t ORDER BY n"))).scalars())
        # Read-then-write under the write lock: no lost update, no duplicate.
        assert values == list(range(1, 2 + 20 * writes))
    finally:
        for engine in engines:
            await engine.dispose()


async def test_writers_of_one_process_queue_in_order_before_reaching_sqlite(tmp_path: Path) -> None:
    """In-process writers wait on the portal's write queue (in arrival order), never in SQLite's sleeping busy
    handler: at most one of them has begun in SQLite at any moment, and all of them commit."""
    path = tmp_path / "queue.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    checked_out = 0
    most_checked_out = 0

    def on_checkout(*_args: object) -> None:
        nonlocal checked_out, most_checked_out
        checked_out += 1
        most_checked_out = max(most_checked_out, checked_out)

    def on_checkin(*_args: object) -> None:
        nonlocal checked_out
        checked_out -= 1

    # A writer waiting in SQLite holds a connection (and has sent BEGIN IMMEDIATE); one waiting on the queue holds
    # none: so at most one connection may be out at any moment.
    event.listen(engine.sync_engine, "checkout", on_checkout)
    event.listen(engine.sync_engine, "checkin", on_checkin)
    order: list[int] = []

    async def writer(n: int) -> None:
        async with transaction(make_session_factory(engine)) as session:
            order.append(n)
            await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            await asyncio.sleep(0.002)  # other writers arrive while this one holds the lock

    try:
        tasks = []
        for n in range(30):
            tasks.append(asyncio.create_task(writer(n)))
            await asyncio.sleep(0)  # each task reaches the queue before the next is made
        await asyncio.gather(*tasks)
        assert most_checked_out == 1
        assert order == list(range(30))
        async with make_session_factory(engine)() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 31
    finally:
        await engine.dispose()


async def test_a_writer_that_waits_too_long_fails_clearly_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portal.db import engine as engine_module

    monkeypatch.setattr(engine_module, "SQLITE_WRITE_WAIT_S", 0.2)
    path = tmp_path / "wait.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    factory = make_session_factory(engine)
    try:
        async with transaction(factory):
            with pytest.raises(OperationalError, match="database is locked"):
                async with transaction(factory) as second:
                    await second.execute(text("INSERT INTO t VALUES (9)"))
        async with factory() as session:
            assert (await session.execute(text("SELECT count(*) FROM t WHERE n = 9"))).scalar_one() == 0
    finally:
        await engine.dispose()


def _insert(n: int, *, fail: bool = False, hold_s: float = 0.0) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        if hold_s:
            time.sleep(hold_s)
        if fail:
            raise ValueError("refused")
        return n

    return work


def _count(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM t")).scalar_one())


async def test_units_run_as_plain_code_commit_roll_back_and_take_the_write_lock(tmp_path: Path) -> None:
    """`run_unit` on SQLite runs the whole unit on a worker thread through the engine's plain twin: a unit that
    returns commits, one that raises leaves nothing behind, and a write unit holds SQLite's lock from its start."""
    path = tmp_path / "units.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    factory = make_session_factory(engine)
    try:
        assert await run_unit(factory, _insert(2), write=True) == 2
        with pytest.raises(ValueError, match="refused"):
            await run_unit(factory, _insert(3, fail=True), write=True)
        assert await run_unit(factory, _count, write=False) == 2  # 1 and 2; not 3

        seen: list[str] = []

        def locked_while_running(session: Session) -> None:
            seen.append(_try_write(path))

        await run_unit(factory, locked_while_running, write=True)
        await run_unit(factory, locked_while_running, write=False)
        assert seen == ["database is locked", "wrote"]
    finally:
        await engine.dispose()
        dispose_twin(engine)


async def test_plain_code_units_and_async_units_share_one_write_queue(tmp_path: Path) -> None:
    """Units on the worker thread queue with `transaction()` users in arrival order, and a unit whose caller is
    cancelled still finishes (and releases the queue) before the next writer begins."""
    path = tmp_path / "mixed.db"
    await _table(path)
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    factory = make_session_factory(engine)
    order: list[int] = []

    async def async_writer(n: int) -> None:
        async with transaction(factory) as session:
            order.append(n)
            await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    def plain_writer(n: int) -> Callable[[Session], int]:
        insert = _insert(n, hold_s=0.002)

        def work(session: Session) -> int:
            order.append(n)
            return insert(session)

        return work

    try:
        tasks = []
        for n in range(10, 30):
            coroutine = async_writer(n) if n % 2 else run_unit(factory, plain_writer(n), write=True)
            tasks.append(asyncio.ensure_future(coroutine))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == list(range(10, 30))

        slow = asyncio.ensure_future(run_unit(factory, _insert(40, hold_s=0.3), write=True))
        await asyncio.sleep(0.1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        # The cancelled caller waited for its unit: it committed, and the next writer does not meet SQLite's lock.
        assert await asyncio.to_thread(_try_write, path) == "wrote"
        assert await run_unit(factory, lambda s: int(s.execute(text("SELECT count(*) FROM t WHERE n = 40")).scalar_one()),
                              write=False) == 1
    finally:
        await engine.dispose()
        dispose_twin(engine)
