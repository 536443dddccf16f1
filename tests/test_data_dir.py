"""Files parlour keeps are its user's only: the data folder 0700, the SQLite database and its
-wal and -shm files 0600, whatever the umask or a folder made beforehand."""

from __future__ import annotations

import logging
import os

import pytest

from parlour.serve import private_data_dir
from parlour.store import open_store


@pytest.fixture
def loose_umask():
    """The usual umask (0022), which leaves new files readable by everyone."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path) -> int:
    return path.stat().st_mode & 0o777


async def test_the_sqlite_store_makes_its_files_readable_by_their_owner_only(tmp_path, loose_umask):
    store = open_store(f"sqlite:///{tmp_path / 'data' / 'parlour.db'}")
    await store.open()
    try:
        await store.put_meta("router", b"x")
        files = sorted((tmp_path / "data").glob("parlour.db*"))
        assert {f.name for f in files} == {"parlour.db", "parlour.db-wal", "parlour.db-shm"}
        assert {f.name: mode(f) for f in files} == dict.fromkeys((f.name for f in files), 0o600)
        assert mode(tmp_path / "data") == 0o700
    finally:
        await store.aclose()


def test_a_data_folder_made_open_beforehand_is_closed_with_a_log_line(tmp_path, loose_umask, caplog):
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    (folder / "parlour.db").write_bytes(b"")
    (folder / "parlour.db").chmod(0o644)
    (folder / "other.txt").write_text("not parlour's")
    with caplog.at_level(logging.WARNING, logger="parlour.serve"):
        private_data_dir(folder)
    assert (mode(folder), mode(folder / "parlour.db"), mode(folder / "other.txt")) == (0o700, 0o600, 0o644)
    assert "could be read by others (mode 755)" in caplog.text and "(mode 644)" in caplog.text
    caplog.clear()
    private_data_dir(folder)  # already private: nothing to say
    private_data_dir(tmp_path / "new" / "data")
    assert not caplog.text and mode(tmp_path / "new" / "data") == 0o700
