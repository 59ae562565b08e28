"""Erasing stored files never reaches outside the files folder, whatever a storage_path says."""

from __future__ import annotations

from pathlib import Path

from portal.governance.erasure import remove_stored_file, resolve_stored_file


def test_paths_outside_the_files_folder_are_refused(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "attachments" / "a1").mkdir(parents=True)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    for path in ("../precious.txt", str(outside), "attachments/../../precious.txt", "", None, "."):
        assert resolve_stored_file(files, path) is None
        assert not remove_stored_file(files, path)
    assert outside.read_text() == "keep me"


def test_a_file_and_its_emptied_folder_go(tmp_path: Path) -> None:
    files = tmp_path / "files"
    folder = files / "attachments" / "a1"
    folder.mkdir(parents=True)
    (folder / "note.txt").write_text("x")
    assert remove_stored_file(files, "attachments/a1/note.txt")
    assert not folder.exists() and (files / "attachments").exists()
    assert not remove_stored_file(files, "attachments/a1/note.txt")  # already gone: nothing to do, no error
