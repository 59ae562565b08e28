"""Build hook: the wheel carries templates/, static/, migrations/ and alembic.ini as portal/_assets/.

The folders stay at the top of the repository, where everyone edits them; an editable install reads them
there (portal/assets.py), so nothing is copied for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ASSETS = ("templates", "static", "migrations", "alembic.ini")


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "portal" / "_assets"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in ASSETS:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildPyWithAssets})
