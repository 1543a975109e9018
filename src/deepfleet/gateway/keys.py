"""API keys in SQLite (WAL): hashed at rest, the secret shown once. The SQLite state backend's
`KeyRecords` (store/base.py); store/postgres_keys.py keeps the same records in PostgreSQL.

A secret looks like `dfk_<id>_<random>`; only its SHA-256 is stored. Keys have high entropy,
so a fast hash is the right tool (the same choice as GitHub and Stripe tokens): a slow
password hash would cost milliseconds per request for no gain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WAL_INDEX_HEADER = 48  # bytes: the first copy of SQLite's WalIndexHdr in the -shm file
SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rpm INTEGER,
    tpm INTEGER,
    max_concurrent INTEGER,
    reasoning_cap INTEGER,
    models TEXT NOT NULL DEFAULT '[]',
    admin INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    reasoning_cap: int | None = None
    models: tuple[str, ...] = ()  # empty: every model
    admin: bool = False

    def usable(self, now: float) -> str | None:
        """None when the key may be used now, else why not."""
        if self.revoked_at is not None:
            return "this API key was revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "this API key has expired"
        return None

    def allows(self, model: str) -> bool:
        return not self.models or model in self.models


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


KEY_COLUMNS = (
    "id, name, hash, created_at, expires_at, rpm, tpm, max_concurrent, reasoning_cap, models, admin"
)
SELECT_KEYS = (
    "SELECT id, name, created_at, expires_at, revoked_at, rpm, tpm, max_concurrent, "
    "reasoning_cap, models, admin, hash FROM api_keys"
)
SIDE_FILES = ("-wal", "-shm", "-journal")


def private_files(path: Path) -> None:
    """Create the database 0600 before SQLite opens it (SQLite gives its -wal, -shm and
    -journal files the database's mode), and tighten any of them left by an older version:
    they hold key hashes and usage."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the SQLite database `path` (created private, WAL mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private_files(path)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class KeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = connect(path)
        self._db.executescript(SCHEMA)
        self._writes = 0
        self._shm: int | None = None
        # The WAL index exists once a connection has used the database in WAL mode (above).
        with contextlib.suppress(OSError):
            self._shm = os.open(f"{path}-shm", os.O_RDONLY | os.O_CLOEXEC)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def close(self) -> None:
        if self._shm is not None:
            os.close(self._shm)
            self._shm = None
        self._db.close()

    def create(
        self,
        name: str,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrent: int | None = None,
        reasoning_cap: int | None = None,
        models: tuple[str, ...] = (),
        expires_at: float | None = None,
        admin: bool = False,
    ) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret is not stored and cannot be shown again."""
        key, secret = new_key(
            name, rpm, tpm, max_concurrent, reasoning_cap, models, expires_at, admin
        )
        self._db.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            key_params(key, hash_secret(secret)),
        )
        self._writes += 1
        return key, secret

    def all(self) -> list[ApiKey]:
        rows = self._db.execute(f"{SELECT_KEYS} ORDER BY created_at").fetchall()
        return [key_from_row(r) for r in rows]

    def by_hash(self) -> dict[str, ApiKey]:
        rows = self._db.execute(SELECT_KEYS).fetchall()
        return {r[11]: key_from_row(r) for r in rows}

    def revoke(self, id_or_name: str) -> list[ApiKey]:
        """Revoke by id, or every live key of that name; returns what was revoked."""
        now = time.time()
        targets = [k for k in self.all() if k.revoked_at is None and id_or_name in (k.id, k.name)]
        for k in targets:
            self._db.execute("UPDATE api_keys SET revoked_at=? WHERE id=?", (now, k.id))
        self._writes += 1
        return targets

    def version(self) -> bytes | int:
        """A value that changes with every commit to this database, from any connection (the
        CLI, another gateway worker, this store): a cheap 'reload?' check on every request.

        It reads SQLite's WAL-index header, the first 48 bytes of the -shm file, which every
        commit rewrites (its change counter, frame count and checksums;
        https://sqlite.org/walformat.html): one `pread`, ~0.5 us, no lock. PRAGMA data_version
        costs ~3 us (a read transaction's two file locks) and misses this connection's own
        commits. Without a readable -shm file, data_version plus a count of this store's own
        writes stands in.
        """
        if self._shm is not None:
            header = os.pread(self._shm, WAL_INDEX_HEADER, 0)
            if len(header) == WAL_INDEX_HEADER:
                return header
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        return (version << 32) + self._writes


def new_key(
    name: str,
    rpm: int | None,
    tpm: int | None,
    max_concurrent: int | None,
    reasoning_cap: int | None,
    models: tuple[str, ...],
    expires_at: float | None,
    admin: bool,
) -> tuple[ApiKey, str]:
    """A new key and its secret (`dfk_<id>_<random>`), for any backend to store."""
    key_id = secrets.token_hex(4)
    secret = f"dfk_{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        key_id,
        name,
        time.time(),
        expires_at,
        None,
        rpm,
        tpm,
        max_concurrent,
        reasoning_cap,
        models,
        admin,
    )
    return key, secret


def key_params(key: ApiKey, hashed: str) -> tuple[Any, ...]:
    """The values of KEY_COLUMNS for `key`."""
    return (
        key.id,
        key.name,
        hashed,
        key.created_at,
        key.expires_at,
        key.rpm,
        key.tpm,
        key.max_concurrent,
        key.reasoning_cap,
        json.dumps(list(key.models)),
        int(key.admin),
    )


def key_from_row(r: tuple[Any, ...] | Any) -> ApiKey:
    """An ApiKey from a SELECT_KEYS row (either backend)."""
    models = tuple(json.loads(str(r[9])))
    return ApiKey(
        str(r[0]),
        str(r[1]),
        float(r[2]),
        _opt_float(r[3]),
        _opt_float(r[4]),
        _opt_int(r[5]),
        _opt_int(r[6]),
        _opt_int(r[7]),
        _opt_int(r[8]),
        models,
        bool(r[10]),
    )


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)
