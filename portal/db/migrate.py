"""Programmatic Alembic: upgrade, downgrade and current revision for a database URL."""

from __future__ import annotations

import io
from typing import TextIO

from alembic import command
from alembic.config import Config

from portal.assets import asset_path


def alembic_config(database_url: str, stdout: TextIO | None = None) -> Config:
    ini = str(asset_path("alembic.ini"))
    cfg = Config(ini, stdout=stdout) if stdout else Config(ini)
    cfg.set_main_option("script_location", str(asset_path("migrations")))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str:
    buf = io.StringIO()
    command.current(alembic_config(database_url, stdout=buf))
    return buf.getvalue().strip()
