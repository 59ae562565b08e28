"""Two real `enclave web` processes on one PostgreSQL database and one Redis: several processes, one truth.

Portal A and portal B are separate `enclave web` processes on their own ports; a third process runs the SAQ
indexing worker. Shown here: a session made on one is valid on the other (and signing out on one ends it on
both); a per-role rate limit counts across both; a worker's job progress is visible from both; the scheduled
purge, run by every process's in-process scheduler, happens once per interval, not once per process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from portal.embedded.idp import IdPProcess
from tests.conftest import PG_URL, REDIS_URL, _pg_url_for, pg_create_database, pg_drop_database
from tests.support.auth import SESSION_COOKIES, free_port
from tests.support.live import (
    ENCLAVE,
    LiveAuth,
    LiveProcess,
    any_cookie,
    clean_environment,
    copy_cookies,
    dump_logs,
    eventually,
    oidc_providers_json,
    redis_url_with_db,
    seed_sample_role_rules,
    start_enclave,
    start_portal,
    start_python_module,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.skipif(
        not (PG_URL and REDIS_URL),
        reason="two-portal tests need a shared PostgreSQL and Redis: set ENCLAVE_TEST_DATABASE_URL and "
        "ENCLAVE_TEST_REDIS_URL (e.g. postgresql://root@127.0.0.1:5432/test, redis://127.0.0.1:6379/0)",
    ),
    pytest.mark.timeout(300),
]

QDRANT_URL = os.environ.get("ENCLAVE_TEST_QDRANT_URL")
# The SAQ queue has one fixed name; a Redis database of its own keeps other test runs' workers (and their
# leftover messages) away from this one. All three processes share it.
REDIS_DB = int(os.environ.get("ENCLAVE_TEST_MULTIPROCESS_REDIS_DB", "9"))
TEACHER_QUESTIONS_PER_MINUTE = 3
JSON = {"accept": "application/json"}
HTML = {"accept": "text/html"}
POLICY = (
    b"# Visiting hours\n\nVisitors may come to the ward between 10:00 and 20:00. Children under twelve visit with "
    b"an adult.\n\n## Infection control\n\nEveryone cleans their hands with alcohol gel on entering the ward and "
    b"again on leaving. Visitors with a cough or fever are asked to stay at home.\n"
)


@dataclass
class Cluster:
    a: LiveProcess
    b: LiveProcess
    worker: LiveProcess
    database_url: str
    started_at: dt.datetime

    @property
    def processes(self) -> list[LiveProcess]:
        return [self.a, self.b, self.worker]


@pytest.fixture(scope="module")
def cluster(
    oidc_idp: IdPProcess, _migrated_templates: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    assert PG_URL and REDIS_URL
    name = pg_create_database(template=_migrated_templates["postgresql"])
    database_url = _pg_url_for(name)
    asyncio.run(seed_sample_role_rules(database_url))
    root = tmp_path_factory.mktemp("two-portals")
    logs = root / "logs"
    shared = {
        "ENCLAVE_DATABASE_URL": database_url,
        "ENCLAVE_REDIS_URL": redis_url_with_db(REDIS_URL, REDIS_DB),
        # One data folder for uploaded files, as on a shared volume; the secret signs cookies on every replica.
        "ENCLAVE_DATA_DIR": str(root / "data"),
        "ENCLAVE_SECRET_KEY": "two-portals-test-secret-key-0123456789abcdef",
        "ENCLAVE_OIDC_PROVIDERS": oidc_providers_json(oidc_idp),
        "ENCLAVE_EMBEDDED_IDP": "false",
        "ENCLAVE_EMBEDDED_LLM": "false",
        "ENCLAVE_SEED_SAMPLE_DATA": "false",
        "ENCLAVE_WORKERS": "0",  # indexing runs in the separate worker process
        "ENCLAVE_CHAT_ROLE_QUESTIONS_PER_MINUTE": f'{{"teacher": {TEACHER_QUESTIONS_PER_MINUTE}}}',
        "ENCLAVE_PURGE_IN_PROCESS": "true",
        "ENCLAVE_PURGE_INTERVAL_MINUTES": "1",
        "ENCLAVE_PURGE_CHECK_SECONDS": "1",
    }
    if QDRANT_URL:
        shared["ENCLAVE_QDRANT_URL"] = QDRANT_URL
        shared["ENCLAVE_QDRANT_COLLECTION"] = f"enclave_mp_{name}"

    def store(collection: str) -> dict[str, str]:
        # Without a Qdrant server each process gets an Edge shard of its own (one process locks a shard).
        return {} if QDRANT_URL else {"ENCLAVE_QDRANT_COLLECTION": collection}

    # Replicas behind one host name share one public URL: the provider's redirect_uri must match on each.
    port_a = free_port()
    shared["ENCLAVE_PUBLIC_URL"] = f"http://127.0.0.1:{port_a}"
    started_at = dt.datetime.now(dt.UTC)
    processes: list[LiveProcess] = []
    try:
        processes.append(start_portal("portal-a", clean_environment(**shared, **store("portal_a")), logs, port=port_a))
        processes.append(start_portal("portal-b", clean_environment(**shared, **store("portal_b")), logs))
        worker_env = clean_environment(**shared, **store("worker"))
        if QDRANT_URL:
            processes.append(start_enclave("worker", ["worker"], worker_env, logs))
        else:
            processes.append(start_python_module("worker", "tests.support.worker_process", worker_env, logs))
        a, b, worker = processes
        a.wait_until_serving()
        b.wait_until_serving()
        worker.wait_for_log("taking jobs" if not QDRANT_URL else "enclave worker:")
        yield Cluster(a, b, worker, database_url, started_at)
    finally:
        for process in reversed(processes):
            process.stop()
        pg_drop_database(name)


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=cluster.a.base_url, timeout=30) as a,
        httpx.AsyncClient(base_url=cluster.b.base_url, timeout=30) as b,
    ):
        yield a, b


@pytest.fixture
def live_auth(oidc_idp: IdPProcess) -> LiveAuth:
    return LiveAuth({"staff": oidc_idp}, default_provider="staff")


async def _csrf(client: httpx.AsyncClient) -> dict[str, str]:
    token = any_cookie(client, ("csrftoken", "__Host-csrftoken"))
    if token is None:
        await client.get("/", headers=HTML)
        token = any_cookie(client, ("csrftoken", "__Host-csrftoken"))
    assert token, "no CSRF cookie"
    return {"x-csrftoken": token}


async def test_a_session_made_on_one_portal_is_valid_on_the_other(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], live_auth: LiveAuth
) -> None:
    a, b = clients
    # Not signed in: B sends the browser to sign in.
    anonymous = await b.get("/chat/", headers=HTML, follow_redirects=False)
    assert anonymous.status_code in (302, 303, 401)

    # The login begins on A and the provider's redirect lands on B (as behind a load balancer).
    callback = await live_auth.login_across(a, b, "teacher")
    assert callback.status_code in (302, 303), callback.text[:400]
    session_cookie = any_cookie(b, SESSION_COOKIES)
    assert session_cookie, "B set no session cookie"
    copy_cookies(b, a)

    for client in (a, b):
        page = await client.get("/chat/", headers=HTML, follow_redirects=False)
        assert page.status_code == 200, f"{client.base_url} answered {page.status_code}"
        assert "Tara Teacher" in page.text

    # Signing out on B ends the session on A too: it lives in Redis, not in B's memory.
    signed_out = await b.post("/auth/logout", headers=await _csrf(b), follow_redirects=False)
    assert signed_out.status_code == 303
    a.cookies.set("enclave_session", session_cookie, domain="127.0.0.1")
    after = await a.get("/chat/", headers=HTML, follow_redirects=False)
    assert after.status_code in (302, 303, 401), f"A still accepted the ended session ({after.status_code})"
    assert "Tara Teacher" not in after.text


async def test_the_rate_limit_counts_questions_on_both_portals(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], live_auth: LiveAuth
) -> None:
    a, b = clients
    await live_auth.login(a, person="teacher", seed_rules=False)
    copy_cookies(a, b)
    # The limit is per calendar minute: start early in a minute so all questions fall into the same one.
    if dt.datetime.now(dt.UTC).second > 45:
        await asyncio.sleep(61 - dt.datetime.now(dt.UTC).second)
    answers: list[tuple[str, int]] = []
    for turn in range(TEACHER_QUESTIONS_PER_MINUTE + 1):
        client = a if turn % 2 == 0 else b
        response = await client.post("/chat/ask", data={"question": f"When may visitors come? ({turn})"},
                                     headers={**JSON, **await _csrf(client)})
        answers.append((str(client.base_url), response.status_code))
    statuses = [status for _url, status in answers]
    assert statuses == [201] * TEACHER_QUESTIONS_PER_MINUTE + [429], answers
    # The refused question went to B, which on its own had seen only one of the teacher's questions.
    assert answers[-1][0] == cluster.b.base_url


async def test_a_workers_progress_is_visible_from_both_portals(
    cluster: Cluster, clients: tuple[httpx.AsyncClient, httpx.AsyncClient], live_auth: LiveAuth
) -> None:
    a, b = clients
    await live_auth.login(a, person="admin", seed_rules=False)
    copy_cookies(a, b)
    csrf = await _csrf(a)
    created = await a.post("/admin/collections", data={"name": "Ward policies", "more_readers": "nurse"},
                           headers={**JSON, **csrf})
    assert created.status_code == 201, created.text
    collection_id = created.json()["id"]
    uploaded = await a.post(f"/admin/collections/{collection_id}/upload", headers={**JSON, **csrf},
                            files=[("files", ("visiting.md", POLICY, "text/markdown"))])
    assert uploaded.status_code == 202, uploaded.text
    (document_id,) = uploaded.json()["created"]

    seen: dict[str, list[tuple[str, float]]] = {"a": [], "b": []}

    async def both_indexed() -> dict[str, Any] | None:
        views = {}
        for key, client in (("a", a), ("b", b)):
            response = await client.get(f"/admin/documents/{document_id}", headers=JSON)
            assert response.status_code == 200, response.text
            views[key] = response.json()
            state = (views[key]["status"], float(views[key]["progress"]))
            if not seen[key] or seen[key][-1] != state:
                seen[key].append(state)
            assert views[key]["status"] != "failed", views[key]["error"]
        return views if all(v["status"] == "indexed" for v in views.values()) else None

    try:
        views = await eventually(both_indexed, timeout=120, every=0.1, what="the document indexed on A and B")
    except AssertionError:
        raise AssertionError(f"progress seen {seen}\n{dump_logs(cluster.processes)}") from None
    assert views["a"]["chunk_count"] == views["b"]["chunk_count"] > 0
    assert seen["a"][-1] == seen["b"][-1] == ("indexed", 1.0)
    # B never ran anything: what it shows came from the database the worker wrote to.
    assert uploaded.json()["jobs"], "no job queued"
    fragment = await b.get(f"/admin/collections/{collection_id}/documents", headers={**HTML, "hx-request": "true"})
    assert fragment.status_code == 200 and 'data-status="indexed"' in fragment.text


def test_processes_stop_on_sigterm(tmp_path: Path, cluster: Cluster) -> None:
    """The fixture's shutdown path: a portal given SIGTERM ends within seconds (uvicorn's graceful stop)."""
    env = dict(cluster.b.env)
    env["ENCLAVE_PURGE_IN_PROCESS"] = "false"
    env.pop("ENCLAVE_PUBLIC_URL", None)
    env["ENCLAVE_QDRANT_COLLECTION"] = "portal_c"
    extra = start_portal("portal-c", env, tmp_path)
    try:
        extra.wait_until_serving()
        started = time.monotonic()
        returncode = extra.stop(timeout=20)
        assert time.monotonic() - started < 20, "SIGTERM did not stop the portal; it needed SIGKILL"
        # uvicorn shuts down gracefully, then ends by the signal it got (exit status -15).
        assert returncode in (0, -15), extra.log_tail()
        assert "Application shutdown complete." in extra.log_tail(), extra.log_tail()
    finally:
        extra.stop()


async def _purge_receipts(database_url: str) -> list[dt.datetime]:
    import asyncpg

    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT at FROM audit_events WHERE action = 'purge.receipt' ORDER BY seq")
    finally:
        await conn.close()
    return [row["at"].replace(tzinfo=dt.UTC) if row["at"].tzinfo is None else row["at"] for row in rows]


async def test_the_scheduled_purge_runs_once_per_interval_not_once_per_process(cluster: Cluster) -> None:
    # Three schedulers (A, B and the worker) ask every second whether the 1-minute purge is due.
    first = (await eventually(lambda: _first_receipt(cluster.database_url), timeout=60, what="a first purge"))
    # Wait until a second run is due and done (60 s after the first, plus a few checks), but well before a third.
    remaining = (first + dt.timedelta(seconds=66)) - dt.datetime.now(dt.UTC)
    if remaining.total_seconds() > 0:
        await asyncio.sleep(remaining.total_seconds())
    receipts = await _purge_receipts(cluster.database_url)
    window = dt.datetime.now(dt.UTC) - first
    assert window < dt.timedelta(seconds=115), "the test ran too slowly to tell"
    # One runner would have written exactly 2 receipts in this window; three uncoordinated ones about 3 x 66.
    # (Checked once with the lease switched off: 160 receipts in the same window.)
    assert len(receipts) == 2, f"{len(receipts)} purge receipts in {window.total_seconds():.0f} s: {receipts[:5]}"
    # Due 60 s after the previous run STARTED; a receipt is stamped a moment into its run, so allow a second.
    assert receipts[1] - receipts[0] >= dt.timedelta(seconds=59)
    assert receipts[0] >= cluster.started_at - dt.timedelta(seconds=1)
    # Several processes appended to the one audit chain meanwhile: it still verifies.
    env = dict(cluster.a.env)
    verify = await asyncio.create_subprocess_exec(ENCLAVE, "audit", "verify", env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(verify.communicate(), timeout=60)
    assert verify.returncode == 0, output.decode(errors="replace")
    for process in cluster.processes:
        assert process.alive(), f"{process.name} died:\n{process.log_tail()}"


async def _first_receipt(database_url: str) -> dt.datetime | None:
    receipts = await _purge_receipts(database_url)
    return receipts[0] if receipts else None
