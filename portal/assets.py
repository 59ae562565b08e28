"""Where the portal's templates/, static/, migrations/ and alembic.ini are: inside the installed wheel, or the checkout.

They live at the top of the repository (every area edits them there). A wheel carries copies in `portal/_assets/`,
put there at build time by setup.py; a source checkout or an editable install has no such folder and uses the
repository's own.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
BUNDLED = PACKAGE / "_assets"
CHECKOUT = PACKAGE.parent
ASSET_NAMES = ("templates", "static", "migrations", "alembic.ini")


def asset_path(name: str) -> Path:
    """The folder or file `name` (one of ASSET_NAMES) of this installation."""
    if name not in ASSET_NAMES:
        raise ValueError(f"{name!r} is not one of the portal's assets {ASSET_NAMES}")
    for base in (BUNDLED, CHECKOUT):
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(
        f"the portal's {name} is missing: neither {BUNDLED / name} (an installed wheel) nor "
        f"{CHECKOUT / name} (a source checkout) exists"
    )
