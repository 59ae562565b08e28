"""The guards from portal/access.py on real routes, with people signed in through the real provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import get
from litestar.testing import AsyncTestClient

from portal.access import requires_admin, requires_collection_manager, requires_login, requires_role
from portal.app import create_app
from portal.db.models import Collection, CollectionManager
from tests.support.auth import AuthActions, app_db


@get("/guarded/login", guards=[requires_login], sync_to_thread=False)
def for_anyone_signed_in() -> str:
    return "ok"


@get("/guarded/clinical", guards=[requires_role("nurse")], sync_to_thread=False)
def for_nurses() -> str:
    return "ok"


@get("/guarded/admin", guards=[requires_admin], sync_to_thread=False)
def for_admins() -> str:
    return "ok"


@get("/guarded/collections/{collection_id:str}", guards=[requires_collection_manager()], sync_to_thread=False)
def for_managers(collection_id: str) -> str:
    return collection_id


@pytest.fixture
async def client(settings_factory: Any, database_url: str, sso_settings: dict[str, Any]) -> AsyncIterator[Any]:
    app = create_app(settings_factory(database_url=database_url, **sso_settings), configure_logs=False)
    for handler in (for_anyone_signed_in, for_nurses, for_admins, for_managers):
        app.register(handler)
    async with AsyncTestClient(app=app) as client:
        yield client


async def _collections(client: Any) -> tuple[str, str]:
    async with app_db(client.app) as session:
        curriculum, clinical = Collection(name="Curriculum"), Collection(name="Clinical")
        session.add_all([curriculum, clinical])
        await session.flush()
        session.add(CollectionManager(collection_id=curriculum.id, role="teacher"))
        return curriculum.id, clinical.id


async def _status(client: Any, path: str) -> int:
    return int((await client.get(path, headers={"accept": "application/json"})).status_code)


async def test_signed_out_gets_401_everywhere(client: Any) -> None:
    curriculum, _ = await _collections(client)
    for path in ("/guarded/login", "/guarded/clinical", "/guarded/admin", f"/guarded/collections/{curriculum}"):
        assert await _status(client, path) == 401


async def test_roles_decide(client: Any, auth: AuthActions) -> None:
    curriculum, clinical = await _collections(client)
    await auth.login(client, person="teacher")
    assert [await _status(client, p) for p in ("/guarded/login", "/guarded/clinical", "/guarded/admin")] == [200, 403, 403]
    assert await _status(client, f"/guarded/collections/{curriculum}") == 200  # teachers manage the curriculum
    assert await _status(client, f"/guarded/collections/{clinical}") == 403
    await auth.login(client, person="nurse")
    assert [await _status(client, p) for p in ("/guarded/clinical", "/guarded/admin")] == [200, 403]
    assert await _status(client, f"/guarded/collections/{curriculum}") == 403
    await auth.login(client, person="admin")
    assert [await _status(client, p) for p in ("/guarded/clinical", "/guarded/admin")] == [200, 200]
    assert await _status(client, f"/guarded/collections/{clinical}") == 200
