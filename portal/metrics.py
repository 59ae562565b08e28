"""Prometheus metrics: request latency, time to first token, tokens/s, retrieval latency, queue depth, purges.

Each portal process exposes its own /metrics (Prometheus scrapes every pod); gauges that describe shared
state (queue depth) are read from the database at scrape time, so every process reports the same truth.
"""

from __future__ import annotations

import gc
import time

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from portal.db.models import IngestionJob
from portal.runtime import Runtime

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_LATENCY = Histogram(
    "enclave_http_request_duration_seconds",
    "Time to answer an HTTP request (to the last byte; streams excluded).",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "enclave_llm_time_to_first_token_seconds",
    "From the question's arrival to the first answer token sent.",
    registry=REGISTRY,
    buckets=(0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
TOKENS_PER_SECOND = Histogram(
    "enclave_llm_tokens_per_second",
    "Answer tokens per second of generation, per answer.",
    registry=REGISTRY,
    buckets=(1, 5, 10, 20, 50, 100, 200, 500),
)
LLM_TOKENS = Counter("enclave_llm_tokens_total", "LLM tokens used.", ["kind"], registry=REGISTRY)
RETRIEVAL_LATENCY = Histogram(
    "enclave_retrieval_duration_seconds",
    "Embedding the question plus the filtered hybrid search.",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
# Objects kept out of full garbage collections (portal.heap): the startup heap of a server process, 0 elsewhere.
HEAP_FROZEN = Gauge(
    "enclave_gc_frozen_objects", "Objects frozen out of Python's full garbage collections.", registry=REGISTRY
)
HEAP_FROZEN.set_function(gc.get_freeze_count)
QUEUE_DEPTH = Gauge("enclave_ingestion_jobs", "Ingestion jobs by status.", ["status"], registry=REGISTRY)
PURGED_RECORDS = Counter(
    "enclave_purged_records_total", "Records removed by retention purges.", ["kind"], registry=REGISTRY
)
PURGE_RUNS = Counter(
    "enclave_purge_runs_total", "Retention purge runs (each writes an audit receipt).", registry=REGISTRY
)


def record_purge_receipt(counts: dict[str, int]) -> None:
    PURGE_RUNS.inc()
    for kind, count in counts.items():
        PURGED_RECORDS.labels(kind=kind).inc(count)


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        streaming = False

        async def observe(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
                streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            await send(message)

        try:
            await app(scope, receive, observe)
        finally:
            if not streaming:
                # The route template, not the raw path: ids in paths would explode the label set.
                route = scope.get("path_template") or ("unmatched" if status == 404 else scope.get("path", ""))
                REQUEST_LATENCY.labels(scope.get("method", ""), str(route), str(status)).observe(
                    time.perf_counter() - started
                )

    return middleware


class MetricsController(Controller):
    include_in_schema = False

    @get("/metrics")
    async def metrics(self, runtime: NamedDependency[Runtime]) -> Response[bytes]:
        async with runtime.db() as session:
            rows = (
                await session.execute(select(IngestionJob.status, func.count()).group_by(IngestionJob.status))
            ).all()
        counts = {status: count for status, count in rows}
        for status in ("queued", "running", "done", "failed"):
            QUEUE_DEPTH.labels(status=status).set(counts.get(status, 0))
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
