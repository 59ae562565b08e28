"""The `enclave` command: run the portal, manage the database, and the operational commands of each area."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from portal import heap
from portal.settings import Settings, SettingsError, load_settings


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        for line in exc.lines:
            click.echo(f"enclave: {line}", err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Enclave: an on-premise chat portal with grounded, cited answers."""


@main.group()
def db() -> None:
    """Database schema migrations (SQLite or PostgreSQL, from ENCLAVE_DATABASE_URL)."""


@db.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Upgrade the schema (to the newest revision by default)."""
    from portal.db import migrate

    settings = _settings()
    migrate.upgrade(settings.resolved_database_url, revision)
    click.echo(f"database upgraded to {revision}")


@db.command("downgrade")
@click.argument("revision", default="base")
def db_downgrade(revision: str) -> None:
    """Downgrade the schema (to an empty database by default)."""
    from portal.db import migrate

    settings = _settings()
    migrate.downgrade(settings.resolved_database_url, revision)
    click.echo(f"database downgraded to {revision}")


@db.command("current")
def db_current() -> None:
    """Print the schema revision the database is at."""
    from portal.db import migrate

    settings = _settings()
    click.echo(migrate.current(settings.resolved_database_url) or "(empty database)")


@contextlib.contextmanager
def _embedded_services(settings: Settings) -> Iterator[Settings]:
    """Start the local LLM (and, once SSO exists, the test identity provider) for the embedded default."""
    with contextlib.ExitStack() as stack:
        if settings.uses_embedded_llm:
            from portal.embedded.llm_server import EmbeddedLLMServer

            settings.data_dir.mkdir(parents=True, exist_ok=True)
            server = EmbeddedLLMServer(
                settings.embedded_llm_port, settings.llm_context_window, settings.llm_model,
                log_path=settings.data_dir / "llm-server.log", threads=settings.embedded_llm_threads,
            )
            click.echo(f"starting the embedded LLM server on 127.0.0.1:{settings.embedded_llm_port} ...")
            stack.enter_context(server)
        for hook in EMBEDDED_HOOKS:
            settings = stack.enter_context(hook(settings))
        yield settings


# Areas add context managers here that start embedded stand-ins and may return adjusted settings.
EMBEDDED_HOOKS: list[Any] = []


def _embedded_idp_hook(settings: Settings) -> Any:
    from portal.embedded.idp import embedded_idp  # the sample identity provider (auth area)

    return embedded_idp(settings)


EMBEDDED_HOOKS.append(_embedded_idp_hook)


def _serve(settings: Settings) -> None:
    import uvicorn

    from portal.app import create_app

    app = create_app(settings)
    heap.enable()
    heap.settle()  # the application as built; the embedding model is settled again once it has loaded
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on")


@main.command("run")
@click.option("--seed/--no-seed", default=None, help="Load the sample collections and documents (default: setting).")
def run(seed: bool | None) -> None:
    """Migrate, seed sample data and serve the portal with its embedded services (the quick start)."""
    from portal.db import migrate

    settings = _settings()
    migrate.upgrade(settings.resolved_database_url)
    if seed if seed is not None else settings.seed_sample_data:
        from portal.seed import seed_sample_data

        asyncio.run(seed_sample_data(settings))
    with _embedded_services(settings) as effective:
        click.echo(f"Enclave is starting on http://{effective.host}:{effective.port}/")
        _serve(effective)


@main.command("web")
def web() -> None:
    """Serve the portal only (production: external LLM, identity provider and stores; no embedded services)."""
    _serve(_settings())


def _register_area_commands() -> None:
    """Each area adds its own commands (eval, ingest, worker, purge, audit...) from its own module."""
    import importlib

    for module_name, attr in AREA_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        main.add_command(getattr(module, attr))


AREA_COMMANDS: list[tuple[str, str]] = [
    ("portal.cli_eval", "eval_command"),
    ("portal.governance.cli", "purge_command"),
    ("portal.governance.cli", "audit_group"),
    ("portal.admin.ingest_cli", "ingest_command"),
    ("portal.jobs.saq_worker", "worker_command"),
    ("portal.backup", "backup_command"),
    ("portal.backup", "restore_command"),
]

_register_area_commands()
