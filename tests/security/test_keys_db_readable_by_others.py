"""Attack: another local user reads the API key hashes and usage from keys.db, its -wal/-shm
files or keys-usage.db*, which SQLite created with the process's umask (0644 under the usual
022) before the store tightened only keys.db itself. Every file is now 0600 from the start."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepfleet.gateway.keys import KeyStore
from deepfleet.gateway.limits import TokenBuckets


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_file_of_the_key_and_usage_stores_is_private(
    tmp_path: Path, loose_umask: None
) -> None:
    keys = KeyStore(tmp_path / "keys.db")
    usage = TokenBuckets(tmp_path / "keys-usage.db")
    try:
        keys.create("alice")
        usage.take_now("k1", "rpm", 10, 1.0, 1.0)
        files = sorted(p.name for p in tmp_path.iterdir())
        assert {"keys.db", "keys.db-wal", "keys.db-shm", "keys-usage.db"} <= set(files)
        loose = {
            p.name: oct(stat.S_IMODE(p.stat().st_mode))
            for p in tmp_path.iterdir()
            if p.stat().st_mode & 0o077
        }
        assert loose == {}, f"readable by others: {loose}"
    finally:
        keys.close()
        usage.close()


def test_files_left_loose_by_an_older_version_are_tightened(
    tmp_path: Path, loose_umask: None
) -> None:
    KeyStore(tmp_path / "keys.db").close()
    for p in tmp_path.iterdir():
        p.chmod(0o644)
    keys = KeyStore(tmp_path / "keys.db")
    try:
        assert all(not p.stat().st_mode & 0o077 for p in tmp_path.iterdir())
    finally:
        keys.close()
