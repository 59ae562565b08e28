"""The app shell: health and readiness, the landing page without JavaScript, errors without stack traces."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from portal.app import create_app
from tests.conftest import free_port


@pytest.fixture
async def client(settings_factory: Any, database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    # Nothing listens on this port: the LLM check must fail and name itself.
    settings = settings_factory(database_url=database_url, llm_base_url=f"http://127.0.0.1:{free_port()}/v1")
    app = create_app(settings, configure_logs=False)
    async with AsyncTestClient(app=app) as client:
        await app.state.runtime.wait_for_embedder()
        yield client


async def test_healthz_answers(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_the_failing_dependency(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["llm"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["vector_store"] == "ok"
    assert body["checks"]["embedding_model"] == "ok"
    assert body["checks"]["llm"].startswith("unreachable")


async def test_readyz_reports_a_database_that_went_away(client: AsyncTestClient[Any]) -> None:
    runtime = client.app.state.runtime
    await runtime.engine.dispose()
    from portal.db.engine import make_engine

    runtime.engine = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    body = (await client.get("/readyz")).json()
    assert "database" in body["failing"]


async def test_landing_page_works_without_javascript(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/", headers={"accept": "text/html"})
    assert response.status_code == 200
    html = response.text
    assert '<main id="main"' in html and 'class="skip-link"' in html
    assert 'href="/auth/login"' in html  # a plain link, not a script
    assert "/static/vendor/htmx-2.0.8/htmx.min.js" in html
    assert response.headers["x-request-id"]
    static = await client.get("/static/css/enclave.css")
    assert static.status_code == 200


async def test_unknown_page_is_a_plain_404_without_a_trace(client: AsyncTestClient[Any]) -> None:
    page = await client.get("/no/such/page", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert "Not found" in page.text and "Traceback" not in page.text
    api = await client.get("/no/such/page", headers={"accept": "application/json"})
    assert api.status_code == 404 and api.json()["status_code"] == 404


async def test_request_id_is_echoed_when_safe(client: AsyncTestClient[Any]) -> None:
    ok = await client.get("/healthz", headers={"x-request-id": "abcdef123456"})
    assert ok.headers["x-request-id"] == "abcdef123456"
    bad = await client.get("/healthz", headers={"x-request-id": "<script>"})
    assert bad.headers["x-request-id"] != "<script>"


def test_log_lines_carry_request_id_and_never_secret_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from portal.logging import configure_logging, get_logger, request_id_var

    configure_logging()
    token = request_id_var.set("req-12345678")
    try:
        get_logger("t").info("asked", question="what is the dose?", cookie="s=1", conversation_id="c1")
    finally:
        request_id_var.reset(token)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "req-12345678"
    assert line["question"] == "[redacted]" and line["cookie"] == "[redacted]"
    assert line["conversation_id"] == "c1"


async def test_metrics_are_exposed_for_prometheus(client: AsyncTestClient[Any]) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'enclave_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}' in text
    assert 'enclave_ingestion_jobs{status="queued"} 0.0' in text
    for name in ("enclave_llm_time_to_first_token_seconds", "enclave_retrieval_duration_seconds",
                 "enclave_llm_tokens_per_second", "enclave_purge_runs_total"):
        assert name in text
