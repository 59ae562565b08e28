"""`enclave ingest PATH --collection NAME`: load a folder tree of documents with a progress bar.

Files whose content is already in the collection are skipped (by content hash); a changed file with a known
relative path becomes a new version of that document. Indexing runs in this process's workers when it can open
the vector store; otherwise (a running portal holds the embedded store) the portal's workers index what this
command queued and the bar follows their progress in the database. Failures are listed at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from portal.admin.actor import Actor
from portal.admin.documents import IncomingFile, upload_documents
from portal.admin.errors import AdminError
from portal.admin.upload_checks import check_upload
from portal.audit import AuditContext
from portal.db.models import Collection, Document, IngestionJob
from portal.principal import Principal
from portal.runtime import Runtime

BATCH = 50
SYSTEM_ACTOR = Actor(
    Principal(user_id="system:enclave-ingest", display_name="enclave ingest", email=None,
              roles=frozenset({"admin"}), session_hash="cli"),
    AuditContext(user_id=None, roles=("system",), client_addr="cli"),
)


@dataclass
class IngestReport:
    scanned: int = 0
    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    indexed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    indexed_elsewhere: bool = False


def find_files(root: Path) -> list[Path]:
    """Every regular file under root, skipping hidden files and folders (.git, .DS_Store...) and symlinks."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.is_symlink() or not path.is_file():
            continue
        found.append(path)
    return found


class _Queuer:
    """Reads files, runs the door checks, and queues them in batches through the same service as the web upload."""

    def __init__(self, runtime: Runtime, collection_id: str, report: IngestReport, known: set[tuple[str, str]]) -> None:
        self.runtime = runtime
        self.collection_id = collection_id
        self.report = report
        self.known = known
        self.max_bytes = runtime.settings.max_upload_mb * 1024 * 1024
        self.batch: list[IncomingFile] = []
        self.document_ids: list[str] = []
        self.job_ids: list[str] = []

    async def add(self, name: str, path: Path) -> None:
        try:
            if (await asyncio.to_thread(path.stat)).st_size > self.max_bytes:
                raise AdminError(f"over the upload limit of {self.runtime.settings.max_upload_mb} MB")
            data = await asyncio.to_thread(path.read_bytes)
            if (name, hashlib.sha256(data).hexdigest()) in self.known:
                self.report.unchanged += 1
                return
            await asyncio.to_thread(check_upload, name, data, self.max_bytes)
        except AdminError as exc:
            self.report.failures.append((name, exc.message.removeprefix(f"{name}: ")))
            return
        except OSError as exc:
            self.report.failures.append((name, f"could not be read ({type(exc).__name__})"))
            return
        self.batch.append(IncomingFile(name, data))
        if len(self.batch) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        if not self.batch:
            return
        names = [f.filename or "" for f in self.batch]
        result = await upload_documents(
            self.runtime, SYSTEM_ACTOR, self.collection_id, self.batch, replace_same_name=True, names=names
        )
        self.report.created += len(result.created)
        self.report.replaced += len(result.replaced)
        self.report.unchanged += len(result.unchanged)
        self.document_ids.extend(result.created + result.replaced)
        self.job_ids.extend(result.job_ids)
        self.batch = []


async def _job_counts(runtime: Runtime, job_ids: list[str]) -> tuple[int, int]:
    """(finished, failed) among these jobs, read from the database like any portal process would."""
    finished = failed = 0
    async with runtime.db() as session:
        for offset in range(0, len(job_ids), 500):
            rows = await session.execute(
                select(IngestionJob.status, func.count())
                .where(IngestionJob.id.in_(job_ids[offset : offset + 500]))
                .where(IngestionJob.status.in_(("done", "failed")))
                .group_by(IngestionJob.status)
            )
            for status, number in rows.all():
                finished += number
                failed += number if status == "failed" else 0
    return finished, failed


async def ingest_folder(
    runtime: Runtime, root: Path, collection_name: str, *, create: bool, wait: bool, console: Console
) -> IngestReport:
    report = IngestReport(indexed_elsewhere=runtime.jobs is None)
    known: set[tuple[str, str]] = set()
    async with runtime.db() as session:
        collection_id = await session.scalar(select(Collection.id).where(func.lower(Collection.name) == collection_name.lower()))
        if collection_id is not None:
            rows = await session.execute(
                select(Document.filename, Document.content_hash).where(Document.collection_id == collection_id)
            )
            known = {(name, digest) for name, digest in rows.all()}
    if collection_id is None:
        if not create:
            raise click.UsageError(f"there is no collection named {collection_name!r} (add --create to make it)")
        from portal.admin.collections import create_collection

        collection_id = await create_collection(runtime, SYSTEM_ACTOR, collection_name)
    files = await asyncio.to_thread(find_files, root)
    is_dir = await asyncio.to_thread(root.is_dir)
    queuer = _Queuer(runtime, collection_id, report, known)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        reading: TaskID = progress.add_task("Reading and queuing", total=len(files))
        for path in files:
            name = path.relative_to(root).as_posix() if is_dir else path.name
            report.scanned += 1
            await queuer.add(name, path)
            progress.advance(reading)
        await queuer.flush()
        if not wait or not queuer.document_ids:
            return report
        indexing = progress.add_task("Indexing", total=len(queuer.job_ids))
        while True:
            finished, _ = await _job_counts(runtime, queuer.job_ids)
            progress.update(indexing, completed=finished)
            if finished >= len(queuer.job_ids):
                break
            await asyncio.sleep(0.5)
    async with runtime.db() as session:
        for offset in range(0, len(queuer.document_ids), 500):
            rows = await session.execute(
                select(Document.filename, Document.status, Document.error)
                .where(Document.id.in_(queuer.document_ids[offset : offset + 500]))
            )
            for name, status, error in rows.all():
                if status == "indexed":
                    report.indexed += 1
                else:
                    report.failures.append((name, error or status))
    return report


def print_report(report: IngestReport, console: Console) -> None:
    console.print(
        f"{report.scanned} file(s) found: {report.created} new, {report.replaced} changed, "
        f"{report.unchanged} unchanged (skipped), {report.indexed} indexed, {len(report.failures)} failed."
    )
    if report.indexed_elsewhere:
        console.print("The vector store is held by a running portal: its workers indexed the queued files.")
    if report.failures:
        console.print("Failures:")
        for name, reason in sorted(report.failures):
            console.print(f"  {name}: {reason}", markup=False, highlight=False)


async def _run(path: Path, collection: str, create: bool, wait: bool) -> int:
    from portal.cli import _settings
    from portal.db import migrate

    settings = _settings()
    await asyncio.to_thread(migrate.upgrade, settings.resolved_database_url)
    if settings.workers < 1:
        settings = settings.model_copy(update={"workers": 1})
    runtime = Runtime.create(settings, answers_questions=False)
    await runtime.start()
    console = Console(stderr=False, soft_wrap=True)
    try:
        report = await ingest_folder(runtime, path, collection, create=create, wait=wait, console=console)
    finally:
        await runtime.stop()
    print_report(report, console)
    return 1 if report.failures else 0


@click.command("ingest")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True, path_type=Path))
@click.option("--collection", "collection", required=True, help="The collection to load the files into.")
@click.option("--create", is_flag=True, help="Create the collection if it does not exist (no role may read it yet).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until every queued file is indexed.")
def ingest_command(path: Path, collection: str, create: bool, wait: bool) -> None:
    """Load a folder tree of documents into a collection, skipping files whose content is unchanged."""
    raise SystemExit(asyncio.run(_run(path, collection, create, wait)))
