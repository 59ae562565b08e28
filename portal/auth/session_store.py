"""Where server-side sessions and single-use login state live: the database by default, Redis when configured.

Both backends behave the same; only a sha256 of a session id is ever stored, so a stolen database or Redis
dump does not yield usable cookies.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.clock import Clock
from portal.db.engine import transaction
from portal.db.models import KeyValue, UserSession
from portal.db.tables import USER_SESSIONS


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class SessionRecord:
    id_hash: str
    user_id: str
    provider: str | None
    created_at: datetime
    last_seen_at: datetime
    absolute_expires_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id_hash": self.id_hash,
                "user_id": self.user_id,
                "provider": self.provider,
                "created_at": self.created_at.isoformat(),
                "last_seen_at": self.last_seen_at.isoformat(),
                "absolute_expires_at": self.absolute_expires_at.isoformat(),
                "data": self.data,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> SessionRecord:
        d = json.loads(raw)
        return cls(
            id_hash=d["id_hash"],
            user_id=d["user_id"],
            provider=d["provider"],
            created_at=datetime.fromisoformat(d["created_at"]),
            last_seen_at=datetime.fromisoformat(d["last_seen_at"]),
            absolute_expires_at=datetime.fromisoformat(d["absolute_expires_at"]),
            data=d.get("data") or {},
        )


class SessionStore(Protocol):
    async def create(self, record: SessionRecord) -> None: ...
    async def get(self, id_hash: str) -> SessionRecord | None: ...
    async def touch(self, id_hash: str, at: datetime) -> None: ...
    async def delete(self, id_hash: str) -> None: ...
    async def delete_for_user(self, user_id: str) -> int: ...
    async def count_for_user(self, user_id: str) -> int: ...


class KeyValueStore(Protocol):
    """Small expiring values shared by all portal processes; `take` is atomic and single-use."""

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None: ...
    async def take(self, key: str) -> bytes | None: ...


# Database backend -------------------------------------------------------------------------------------------


# The columns a SessionRecord is made of, for queries that read them beside others (see portal.auth.sessions); table
# columns, not mapped attributes, as every signed-in request reads them (see portal.db.tables).
SESSION_COLUMNS = (
    USER_SESSIONS.c.id_hash,
    USER_SESSIONS.c.user_id,
    USER_SESSIONS.c.provider,
    USER_SESSIONS.c.created_at,
    USER_SESSIONS.c.last_seen_at,
    USER_SESSIONS.c.absolute_expires_at,
    USER_SESSIONS.c.data,
)


def record_from_row(row: Any) -> SessionRecord | None:
    """A SessionRecord from a row holding SESSION_COLUMNS; None for a session no longer tied to a person."""
    if row.user_id is None:
        return None
    return SessionRecord(
        id_hash=row.id_hash,
        user_id=row.user_id,
        provider=row.provider,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        absolute_expires_at=row.absolute_expires_at,
        data=dict(row.data or {}),
    )


class DatabaseSessionStore:
    def __init__(self, db: async_sessionmaker[AsyncSession]) -> None:
        self._db = db

    async def create(self, record: SessionRecord) -> None:
        async with transaction(self._db) as session:
            session.add(
                UserSession(
                    id_hash=record.id_hash,
                    user_id=record.user_id,
                    provider=record.provider,
                    data=record.data,
                    created_at=record.created_at,
                    last_seen_at=record.last_seen_at,
                    absolute_expires_at=record.absolute_expires_at,
                )
            )

    async def get(self, id_hash: str) -> SessionRecord | None:
        async with self._db() as session:
            return await self.get_in(session, id_hash)

    @staticmethod
    async def get_in(session: AsyncSession, id_hash: str) -> SessionRecord | None:
        row = (await session.execute(select(*SESSION_COLUMNS).where(USER_SESSIONS.c.id_hash == id_hash))).first()
        return record_from_row(row) if row is not None else None

    async def touch(self, id_hash: str, at: datetime) -> None:
        async with transaction(self._db) as session:
            await session.execute(update(UserSession).where(UserSession.id_hash == id_hash).values(last_seen_at=at))

    async def delete(self, id_hash: str) -> None:
        async with transaction(self._db) as session:
            await session.execute(delete(UserSession).where(UserSession.id_hash == id_hash))

    async def delete_for_user(self, user_id: str) -> int:
        async with transaction(self._db) as session:
            result = await session.execute(
                delete(UserSession).where(UserSession.user_id == user_id).returning(UserSession.id_hash)
            )
            return len(result.all())

    async def count_for_user(self, user_id: str) -> int:
        async with self._db() as session:
            rows = await session.execute(select(UserSession.id_hash).where(UserSession.user_id == user_id))
            return len(rows.all())


class DatabaseKeyValueStore:
    def __init__(self, db: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        now = self._clock.now()
        async with transaction(self._db) as session:
            # Abandoned sign-ins leave rows behind; clear the expired ones while we hold the write lock anyway.
            await session.execute(delete(KeyValue).where(KeyValue.expires_at.is_not(None), KeyValue.expires_at < now))
            session.add(KeyValue(key=key, value=value, expires_at=now + ttl))

    async def take(self, key: str) -> bytes | None:
        # DELETE ... RETURNING: of two concurrent callbacks with the same state only one gets the row.
        async with transaction(self._db) as session:
            result = await session.execute(
                delete(KeyValue).where(KeyValue.key == key).returning(KeyValue.value, KeyValue.expires_at)
            )
            row = result.first()
        if row is None:
            return None
        value, expires_at = row
        if expires_at is not None and expires_at <= self._clock.now():
            return None
        return bytes(value)


# Redis backend ----------------------------------------------------------------------------------------------


class RedisSessionStore:
    """Sessions as JSON under enclave:session:<hash>, plus a per-user set so deactivation finds them all."""

    def __init__(self, redis: Any, absolute_lifetime: timedelta) -> None:
        self._redis = redis
        # Redis' own expiry runs on real time and only cleans up; idle/absolute checks use the app clock.
        self._ttl = int(absolute_lifetime.total_seconds()) + 3600

    @staticmethod
    def _key(id_hash: str) -> str:
        return f"enclave:session:{id_hash}"

    @staticmethod
    def _user_key(user_id: str) -> str:
        return f"enclave:user-sessions:{user_id}"

    async def create(self, record: SessionRecord) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.id_hash), record.to_json(), ex=self._ttl)
            pipe.sadd(self._user_key(record.user_id), record.id_hash)
            pipe.expire(self._user_key(record.user_id), self._ttl)
            await pipe.execute()

    async def get(self, id_hash: str) -> SessionRecord | None:
        raw = await self._redis.get(self._key(id_hash))
        return SessionRecord.from_json(raw) if raw else None

    async def touch(self, id_hash: str, at: datetime) -> None:
        record = await self.get(id_hash)
        if record is None:
            return
        record.last_seen_at = at
        # XX: never resurrect a session that was deleted between the read and this write.
        await self._redis.set(self._key(id_hash), record.to_json(), xx=True, keepttl=True)

    async def delete(self, id_hash: str) -> None:
        record = await self.get(id_hash)
        await self._redis.delete(self._key(id_hash))
        if record is not None:
            await self._redis.srem(self._user_key(record.user_id), id_hash)

    async def delete_for_user(self, user_id: str) -> int:
        hashes = await self._redis.smembers(self._user_key(user_id))
        keys = [self._key(h.decode() if isinstance(h, bytes) else h) for h in hashes]
        deleted = int(await self._redis.delete(*keys)) if keys else 0
        await self._redis.delete(self._user_key(user_id))
        return deleted

    async def count_for_user(self, user_id: str) -> int:
        hashes = await self._redis.smembers(self._user_key(user_id))
        keys = [self._key(h.decode() if isinstance(h, bytes) else h) for h in hashes]
        return int(await self._redis.exists(*keys)) if keys else 0


class RedisKeyValueStore:
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def put(self, key: str, value: bytes, ttl: timedelta) -> None:
        await self._redis.set(f"enclave:kv:{key}", value, ex=max(1, int(ttl.total_seconds())))

    async def take(self, key: str) -> bytes | None:
        raw = await self._redis.getdel(f"enclave:kv:{key}")
        return bytes(raw) if raw is not None else None
