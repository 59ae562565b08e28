"""Uploaded files on disk, named by the SHA-256 of their content: the client's file name never reaches the disk."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_path_for(digest: str) -> str:
    # Two hex characters of fan-out keep any one folder small at thousands of files.
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("not a SHA-256 hex digest")
    return f"{digest[:2]}/{digest}"


def resolve(root: Path, relative: str) -> Path:
    """The absolute path of a stored file; refuses anything that would leave the files folder."""
    base = root.resolve()
    path = (base / relative).resolve()
    if base not in path.parents:
        raise ValueError("stored file path leaves the files folder")
    return path


def store_bytes(root: Path, data: bytes) -> tuple[str, str]:
    """Write `data` once under its hash (atomic rename); returns (digest, relative path)."""
    digest = content_hash(data)
    relative = relative_path_for(digest)
    target = resolve(root, relative)
    if target.exists() and target.stat().st_size == len(data):
        return digest, relative
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest, relative


def read_bytes(root: Path, relative: str) -> bytes:
    return resolve(root, relative).read_bytes()


def remove(root: Path, relative: str) -> bool:
    """Delete a stored file; True when a file was there. Callers check first that nothing else refers to it."""
    path = resolve(root, relative)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def count_files(root: Path) -> int:
    if not root.exists():
        return 0
    return sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith(".upload-"))
