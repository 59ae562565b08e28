"""State every portal process must see: rate counters, Stop requests and zero-retention turns.

Kept in the database (rate_counters, kv_store) or in Redis when ENCLAVE_REDIS_URL is set, never only in one
process's memory: the Stop button or the next question may reach another process than the one streaming.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import LargeBinary, bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from portal.clock import Clock
from portal.db.base import UTCDateTime
from portal.db.engine import transaction
from portal.db.models import KeyValue, RateCounter


class SharedState(Protocol):
    async def count_in_window(self, key: str, window_start: datetime, window: timedelta) -> int:
        """Add one to the counter of `key` for the window starting at `window_start`; return the new count.

        A database-held counter can also join a unit of work already open (`DatabaseState.count_in_unit`)."""
        ...

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None: ...
    async def put_many(self, keys: list[str], value: bytes, ttl: timedelta) -> None:
        """`put` for many keys in one round trip (the heartbeat of every answer a process is streaming); in the
        database, also inside a unit of work already open (`DatabaseState.put_many_in_unit`)."""
        ...

    async def get(self, key: str) -> bytes | None: ...
    async def take(self, key: str) -> bytes | None:
        """Read and delete in one step (only one process gets a zero-retention turn)."""
        ...

    async def delete(self, key: str) -> None: ...
    async def present(self, keys: list[str]) -> set[str]:
        """Which of `keys` exist now (one round trip for all the streams a process serves)."""
        ...

    async def close(self) -> None: ...


# The two upserts as SQL text, which SQLite (3.35+) and PostgreSQL both take as written. SQLAlchemy cannot cache the
# compiled form of its dialects' INSERT ... ON CONFLICT constructs, so built that way every question compiled
# them afresh (about a millisecond each, on the chat's critical path); a text statement compiles once.
_COUNT_UP = text(
    "INSERT INTO rate_counters (key, window_start, count) VALUES (:key, :window_start, 1) "
    "ON CONFLICT (key, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING count"
).bindparams(bindparam("window_start", type_=UTCDateTime()))
_PUT = text(
    "INSERT INTO kv_store (key, value, expires_at) VALUES (:key, :value, :expires_at) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
).bindparams(bindparam("value", type_=LargeBinary()), bindparam("expires_at", type_=UTCDateTime()))


class DatabaseState:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def count_in_window(self, key: str, window_start: datetime, window: timedelta) -> int:
        async with transaction(self._db) as session:
            return await session.run_sync(self.count_in_unit, key, window_start, window)

    @staticmethod
    def count_in_unit(session: Session, key: str, window_start: datetime, window: timedelta) -> int:
        """`count_in_window` inside a unit of work run as plain code (`portal.db.engine.run_unit`)."""
        count = int(session.execute(_COUNT_UP, {"key": key, "window_start": window_start}).scalar_one())
        if count == 1:
            # A new window began: the old ones are useless, and dropping them now keeps the table at one row per
            # active person (once per window, not on every question).
            session.execute(
                delete(RateCounter).where(RateCounter.key == key, RateCounter.window_start < window_start - window)
            )
        return count

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        await self.put_many([key], value, ttl)

    async def put_many(self, keys: list[str], value: bytes, ttl: timedelta) -> None:
        if not keys:
            return
        async with transaction(self._db) as session:
            await session.run_sync(self.put_many_in_unit, keys, value, ttl)

    def put_many_in_unit(self, session: Session, keys: list[str], value: bytes, ttl: timedelta) -> None:
        """`put_many` inside a unit of work run as plain code (`portal.db.engine.run_unit`)."""
        expires = self._clock.now() + ttl
        session.execute(_PUT, [{"key": key, "value": value, "expires_at": expires} for key in keys])

    async def get(self, key: str) -> bytes | None:
        async with self._db() as session:
            row = (await session.execute(select(KeyValue).where(KeyValue.key == key))).scalar_one_or_none()
            return self._live(row)

    async def take(self, key: str) -> bytes | None:
        async with transaction(self._db) as session:
            row = (
                await session.execute(delete(KeyValue).where(KeyValue.key == key).returning(KeyValue.value, KeyValue.expires_at))
            ).first()
            if row is None or (row.expires_at is not None and row.expires_at <= self._clock.now()):
                return None
            return bytes(row.value)

    async def delete(self, key: str) -> None:
        async with transaction(self._db) as session:
            await session.execute(delete(KeyValue).where(KeyValue.key == key))

    async def present(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        async with self._db() as session:
            rows = await session.execute(
                select(KeyValue.key).where(
                    KeyValue.key.in_(keys),
                    (KeyValue.expires_at.is_(None)) | (KeyValue.expires_at > self._clock.now()),
                )
            )
            return set(rows.scalars())

    def _live(self, row: KeyValue | None) -> bytes | None:
        if row is None or (row.expires_at is not None and row.expires_at <= self._clock.now()):
            return None
        return bytes(row.value)

    async def close(self) -> None:
        return None


def _milliseconds(ttl: timedelta) -> int:
    return max(1, int(ttl.total_seconds() * 1000))


class RedisState:
    def __init__(self, url: str) -> None:
        from portal.redis_client import redis_client

        self._redis = redis_client(url)

    async def count_in_window(self, key: str, window_start: datetime, window: timedelta) -> int:
        bucket = f"enclave:rate:{key}:{int(window_start.timestamp())}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(bucket)
            pipe.expire(bucket, int(window.total_seconds() * 2))
            count, _ = await pipe.execute()
        return int(count)

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        await self._redis.set(f"enclave:{key}", value, px=_milliseconds(ttl))

    async def put_many(self, keys: list[str], value: bytes, ttl: timedelta) -> None:
        if not keys:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(f"enclave:{key}", value, px=_milliseconds(ttl))
            await pipe.execute()

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(f"enclave:{key}")
        return value.encode() if isinstance(value, str) else value

    async def take(self, key: str) -> bytes | None:
        value = await self._redis.getdel(f"enclave:{key}")
        return value.encode() if isinstance(value, str) else value

    async def delete(self, key: str) -> None:
        await self._redis.delete(f"enclave:{key}")

    async def present(self, keys: list[str]) -> set[str]:
        if not keys:
            return set()
        values = await self._redis.mget([f"enclave:{key}" for key in keys])
        return {key for key, value in zip(keys, values, strict=True) if value is not None}

    async def close(self) -> None:
        await self._redis.aclose()


def open_shared_state(redis_url: str | None, db: async_sessionmaker[AsyncSession], clock: Clock) -> SharedState:
    return RedisState(redis_url) if redis_url else DatabaseState(db, clock)
