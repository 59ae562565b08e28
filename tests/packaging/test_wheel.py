"""The wheel carries templates/, static/, migrations/ and alembic.ini, and an installed copy serves from them.

Builds the wheel from a copy of the source (nothing is written into the checkout), unpacks it into a folder that
is then the only place `portal` is imported from, and in a separate Python process migrates a new SQLite
database and serves a page and a static file from the unpacked package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("portal", "rag", "templates", "static", "migrations", "alembic.ini", "pyproject.toml", "setup.py",
           "MANIFEST.in", "README.md")

pytestmark = [pytest.mark.timeout(300)]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_assets"))
        else:
            shutil.copy2(path, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=240,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (work / "dist").glob("enclave-*.whl")
    return found


def test_the_wheel_holds_every_template_static_file_and_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "static", "migrations"):
        expected = {f"portal/_assets/{folder}/{name}" for name in _files(REPO / folder)}
        assert expected and expected <= names, sorted(expected - names)[:10]
    assert "portal/_assets/alembic.ini" in names
    assert "portal/assets.py" in names
    # Only the package data: nothing lands beside the packages in site-packages.
    assert {name.split("/", 1)[0] for name in names} <= {"portal", "rag", wheel.name.split("-")[0] + "-0.1.0.dist-info"}


def test_an_installed_wheel_migrates_and_serves_from_its_own_files(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = textwrap.dedent(
        f"""
        import portal, portal.assets
        from pathlib import Path
        site = Path({str(site)!r}).resolve()
        assert Path(portal.__file__).resolve().is_relative_to(site), portal.__file__
        for name in portal.assets.ASSET_NAMES:
            assert portal.assets.asset_path(name).is_relative_to(site / "portal" / "_assets"), name

        from portal.db import migrate
        url = "sqlite+aiosqlite:///{tmp_path / 'enclave.db'}"
        migrate.upgrade(url)
        assert migrate.current(url).endswith("(head)"), migrate.current(url)

        from litestar.testing import TestClient
        from portal.app import create_app
        from portal.settings import Settings
        settings = Settings(database_url=url, data_dir=Path({str(tmp_path / 'data')!r}), embedded_idp=False,
                            embedded_llm=False, seed_sample_data=False, workers=0, purge_in_process=False)
        with TestClient(create_app(settings, configure_logs=False)) as client:
            page = client.get("/auth/login", headers={{"accept": "text/html"}})
            assert page.status_code == 200 and "<html" in page.text, (page.status_code, page.text[:300])
            css = client.get("/static/css/enclave.css")
            assert css.status_code == 200 and len(css.content) > 100
        print("installed wheel ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("ENCLAVE_")}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0 and "installed wheel ok" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
