"""`enclave purge` (one run, for cron or a Kubernetes CronJob) and `enclave audit verify|export`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from portal.logging import get_logger
from portal.settings import Settings
from rag.store import VectorStore

log = get_logger(__name__)


def _settings() -> Settings:
    from portal.cli import _settings as load
    from portal.logging import configure_logging

    configure_logging()  # JSON lines on stderr: stdout carries the receipt or the export
    return load()


async def _open_store(settings: Settings) -> VectorStore | None:
    """The same vector store the portal uses; None (and a warning) when it cannot be opened now."""
    from rag.store import StoreConfig, open_store

    try:
        store = open_store(
            StoreConfig(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
                path=str(settings.vector_path),
                collection_name=settings.qdrant_collection,
                dim=settings.embedding_dim,
            )
        )
        await store.ensure_ready()
        return store
    except Exception as exc:  # noqa: BLE001 - the purge still removes rows; files and vectors stay queued
        click.echo(f"enclave purge: the vector store is unavailable ({type(exc).__name__}); "
                   "files and vectors stay queued for the next run", err=True)
        return None


@click.command("purge")
@click.option(
    "--open-embedded-store", is_flag=True,
    help="With the embedded vector store (no ENCLAVE_QDRANT_URL): open it here. Only while the portal is stopped.",
)
def purge_command(open_embedded_store: bool) -> None:
    """Run the retention purge once and print its receipt (exit 3 when files or vectors are left queued)."""
    from portal.db.engine import make_engine, make_session_factory
    from portal.governance.scheduler import process_holder_name, run_purge_with_lease

    settings = _settings()

    async def go() -> int:
        engine = make_engine(settings.resolved_database_url)
        store = None
        if settings.qdrant_url is not None or open_embedded_store:
            store = await _open_store(settings)
        else:
            # The embedded store belongs to the running portal process: the rows go now, and the portal's own
            # scheduler removes the queued files and vectors on its next check.
            click.echo("enclave purge: embedded vector store left to the portal; files and vectors stay queued "
                       "(use --open-embedded-store while the portal is stopped)", err=True)
        try:
            report = await run_purge_with_lease(
                make_session_factory(engine), store, settings, holder=process_holder_name(), only_if_due=False
            )
        finally:
            if store is not None:
                await store.close()
            await engine.dispose()
        if report is None:
            click.echo("another purge is running now; nothing done")
            return 0
        click.echo(json.dumps(report.receipt(), indent=2, sort_keys=True))
        return 3 if report.files_and_vectors.left_pending else 0

    sys.exit(asyncio.run(go()))


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident audit trail: verify the chain, export records."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Check every record's hash and link. Exit 0 when intact; 1 and the places when not. Never repairs."""
    from portal.audit import verify_chain
    from portal.db.engine import make_engine, make_session_factory

    settings = _settings()

    async def go() -> int:
        engine = make_engine(settings.resolved_database_url)
        try:
            async with make_session_factory(engine)() as session:
                report = await verify_chain(session)
        finally:
            await engine.dispose()
        if report.ok:
            click.echo(f"audit chain intact: {report.checked} records checked")
            return 0
        click.echo(f"audit chain BROKEN: {len(report.problems)} problem(s) in {report.checked} records", err=True)
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
        return 1

    sys.exit(asyncio.run(go()))


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@click.option("--user", "user_id", default="")
@click.option("--action", default="")
@click.option("--outcome", type=click.Choice(["", "allowed", "denied"]), default="")
@click.option("--since", default="", help="YYYY-MM-DD (inclusive, UTC)")
@click.option("--until", default="", help="YYYY-MM-DD (inclusive, UTC)")
def audit_export(fmt: str, output: Path | None, user_id: str, action: str, outcome: str, since: str, until: str) -> None:
    """Write audit records, oldest first, as JSON lines or CSV. The export itself is audited."""
    from portal.audit import SYSTEM_CONTEXT, append_audit
    from portal.db.engine import make_engine, make_session_factory, transaction
    from portal.governance.audit_trail import AuditFilters, csv_lines, iter_events, jsonl_lines

    settings = _settings()
    try:
        filters = AuditFilters.parse(user_id=user_id, action=action, outcome=outcome, since=since, until=until)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def go() -> None:
        engine = make_engine(settings.resolved_database_url)
        factory = make_session_factory(engine)
        try:
            async with transaction(factory) as session:
                await append_audit(
                    session, at=settings.clock.now(), action="audit.exported", context=SYSTEM_CONTEXT,
                    object_type="audit", detail={"format": fmt, "filters": filters.as_query(), "via": "cli"},
                )
            lines = (jsonl_lines if fmt == "jsonl" else csv_lines)(iter_events(factory, filters))
            stream = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
            try:
                async for line in lines:
                    stream.write(line)
            finally:
                if output:
                    stream.close()
        finally:
            await engine.dispose()

    asyncio.run(go())
