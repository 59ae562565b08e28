"""What every portal process must see alike — rate counters, Stop requests, zero-retention turns — in both places
it can live: the database (embedded default) and Redis (production). Same tests, both real stores."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from portal.chat.shared_state import DatabaseState, RedisState, SharedState
from portal.clock import SystemClock
from portal.db.engine import make_engine, make_session_factory
from portal.redis_client import MAX_CONNECTIONS, redis_client
from tests.conftest import REDIS_SKIP_REASON, REDIS_URL


@pytest.fixture(params=["database", "redis"])
async def state(request: pytest.FixtureRequest, db_backend: str, database_url: str) -> AsyncIterator[SharedState]:
    if request.param == "redis":
        if not REDIS_URL:
            pytest.skip(REDIS_SKIP_REASON)
        if db_backend != "sqlite":
            pytest.skip("the Redis variant runs once (with the SQLite id); the database plays no part in it")
        redis_state = RedisState(REDIS_URL)
        yield redis_state
        await redis_state.close()
        return
    engine = make_engine(database_url)
    yield DatabaseState(make_session_factory(engine), SystemClock())
    await engine.dispose()


def _key() -> str:
    return f"test:{uuid.uuid4().hex}"  # tests share one Redis: every key is their own


async def test_rate_counter_counts_per_key_and_window(state: SharedState) -> None:
    key, other = _key(), _key()
    window = timedelta(minutes=1)
    start = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    assert [await state.count_in_window(key, start, window) for _ in range(3)] == [1, 2, 3]
    assert await state.count_in_window(other, start, window) == 1  # another person's counter
    assert await state.count_in_window(key, start + window, window) == 1  # the next minute starts afresh


async def test_concurrent_counts_lose_no_increment(state: SharedState) -> None:
    key = _key()
    start = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    counts = await asyncio.gather(*(state.count_in_window(key, start, timedelta(minutes=1)) for _ in range(40)))
    assert sorted(counts) == list(range(1, 41))


async def test_take_gives_a_value_to_exactly_one_caller(state: SharedState) -> None:
    key = _key()
    await state.put(key, b"the question", timedelta(minutes=1))
    assert await state.get(key) == b"the question"
    taken = await asyncio.gather(*(state.take(key) for _ in range(10)))
    assert taken.count(b"the question") == 1 and taken.count(None) == 9
    assert await state.get(key) is None


async def test_present_delete_and_expiry(state: SharedState) -> None:
    stop, gone, short = _key(), _key(), _key()
    await state.put(stop, b"u1", timedelta(minutes=1))
    await state.put(gone, b"u1", timedelta(minutes=1))
    await state.put(short, b"u1", timedelta(milliseconds=200))
    await state.delete(gone)
    assert await state.present([stop, gone, short, _key()]) == {stop, short}
    await asyncio.sleep(0.5)
    assert await state.present([stop, short]) == {stop}
    assert await state.get(short) is None and await state.take(short) is None
    assert await state.present([]) == set()


async def test_redis_burst_larger_than_the_pool_waits_instead_of_failing() -> None:
    """redis-py's default pool raised "Too many connections" past 100 borrowers; a burst of questions must queue."""
    if not REDIS_URL:
        pytest.skip(REDIS_SKIP_REASON)
    client = redis_client(REDIS_URL)
    prefix = _key()

    async def borrow(i: int) -> bytes | None:
        async with client.pipeline(transaction=True) as pipe:  # holds a connection across an await
            pipe.set(f"{prefix}:{i}", b"x", px=5000)
            await asyncio.sleep(0.02)
            pipe.get(f"{prefix}:{i}")
            return (await pipe.execute())[1]

    try:
        results = await asyncio.gather(*(borrow(i) for i in range(MAX_CONNECTIONS * 2)))
        assert results == [b"x"] * (MAX_CONNECTIONS * 2)
    finally:
        await client.aclose()


async def test_put_many_sets_and_renews_every_key(state: SharedState) -> None:
    first, second = _key(), _key()
    await state.put_many([first, second], b"1", timedelta(milliseconds=300))
    assert await state.present([first, second]) == {first, second}
    await state.put_many([first], b"1", timedelta(minutes=1))  # renewed: outlives the first lease
    await state.put_many([], b"1", timedelta(minutes=1))  # nothing to do, no error
    await asyncio.sleep(0.6)
    assert await state.present([first, second]) == {first}
