"""The same session behaviour with sessions and login state in Redis (ENCLAVE_REDIS_URL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from portal.app import create_app
from portal.auth.session_store import RedisSessionStore, hash_session_id
from portal.clock import MovableClock
from portal.db.models import AuditEvent, KeyValue, UserSession
from tests.conftest import REDIS_SKIP_REASON, REDIS_URL
from tests.support.auth import AuthActions, app_db

pytestmark = [pytest.mark.redis, pytest.mark.skipif(not REDIS_URL, reason=REDIS_SKIP_REASON)]


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def client(
    settings_factory: Any, database_url: str, sso_settings: dict[str, Any], clock: MovableClock
) -> AsyncIterator[Any]:
    settings = settings_factory(
        database_url=database_url, redis_url=REDIS_URL, clock=clock, scim_token="t" * 24, **sso_settings
    )
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        yield client


@pytest.fixture
async def store() -> AsyncIterator[RedisSessionStore]:
    """Our own Redis connection: the app's belongs to the app's event loop (another thread)."""
    import redis.asyncio as aioredis

    connection = aioredis.from_url(REDIS_URL or "")
    yield RedisSessionStore(connection, timedelta(hours=12))
    await connection.aclose()


async def _db_rows(client: Any) -> tuple[int, int]:
    async with app_db(client.app) as session:
        sessions = (await session.execute(select(func.count()).select_from(UserSession))).scalar_one()
        kv = (await session.execute(select(func.count()).select_from(KeyValue))).scalar_one()
    return int(sessions), int(kv)


async def test_sessions_live_in_redis_and_sign_out_removes_them(
    client: Any, auth: AuthActions, store: RedisSessionStore
) -> None:
    await auth.login(client, person="nurse")
    id_hash = hash_session_id(client.cookies["enclave_session"])
    record = await store.get(id_hash)
    assert record is not None and record.provider == "staff"
    assert await _db_rows(client) == (0, 0)  # neither the session nor the login state touched the database
    assert "Noah Nurse" in (await client.get("/", headers={"accept": "text/html"})).text
    await auth.logout(client)
    assert await store.get(id_hash) is None


async def test_replayed_callback_fails_with_redis_login_state(client: Any, auth: AuthActions) -> None:
    await auth.login(client, person="teacher")
    callback = urlsplit(auth.last_callback_url or "")
    replay = await client.get(f"{callback.path}?{callback.query}", headers={"accept": "text/html"})
    assert replay.status_code == 400 and "already used" in replay.text


async def test_idle_timeout_with_redis(
    client: Any, auth: AuthActions, clock: MovableClock, store: RedisSessionStore
) -> None:
    await auth.login(client, person="nurse")
    id_hash = hash_session_id(client.cookies["enclave_session"])
    clock.advance(timedelta(minutes=16))
    assert "Noah Nurse" not in (await client.get("/", headers={"accept": "text/html"})).text
    assert await store.get(id_hash) is None
    async with app_db(client.app) as session:
        event = (await session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))).scalar_one()
    assert (event.action, event.detail["reason"]) == ("auth.session_expired", "idle_timeout")


async def test_scim_deactivation_ends_redis_sessions(client: Any, auth: AuthActions, store: RedisSessionStore) -> None:
    await auth.login(client, person="admin")
    user_id = (await store.get(hash_session_id(client.cookies["enclave_session"]))).user_id  # type: ignore[union-attr]
    assert await store.count_for_user(user_id) == 1
    headers = {"authorization": "Bearer " + "t" * 24}
    patch = {"Operations": [{"op": "replace", "path": "active", "value": False}]}
    assert (await client.patch(f"/scim/v2/Users/{user_id}", json=patch, headers=headers)).status_code == 200
    assert await store.count_for_user(user_id) == 0
    assert "Ada Admin" not in (await client.get("/", headers={"accept": "text/html"})).text
