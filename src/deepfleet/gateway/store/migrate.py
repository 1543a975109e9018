"""Copy a SQLite state (keys.db and keys-usage.db) into PostgreSQL: `deepfleet state migrate`.

Idempotent, so it can run again after gateways wrote more to SQLite: a key is copied once by
its id (a revocation made in SQLite since is carried over; nothing else of a copied key
changes), and the usage ledger's lines land under their own origin (`sqlite:<keys.db path>`),
replaced on each run rather than added, so running twice counts nothing twice and the live
ledger the PostgreSQL gateways write is never touched. Token buckets are not copied: they are
a minute's state, and a fresh bucket starts full.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepfleet.config.state import redact
from deepfleet.gateway.keys import KEY_COLUMNS
from deepfleet.gateway.store.open import usage_db_path
from deepfleet.gateway.store.postgres_conn import connect
from deepfleet.gateway.store.postgres_schema import MIGRATIONS

COPY_KEY = (
    f"INSERT INTO api_keys ({KEY_COLUMNS}, revoked_at) VALUES ({', '.join(['%s'] * 12)}) "
    "ON CONFLICT (id) DO UPDATE SET revoked_at = coalesce(api_keys.revoked_at, "
    "excluded.revoked_at) RETURNING (xmax = 0) AS inserted"
)
COPY_USAGE = (
    "INSERT INTO usage (key_id, model, hour, origin, requests, prompt_tokens, completion_tokens) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (key_id, model, hour, origin) DO UPDATE SET "
    "requests = excluded.requests, prompt_tokens = excluded.prompt_tokens, "
    "completion_tokens = excluded.completion_tokens"
)


@dataclass
class MigrationSummary:
    source: str
    target: str
    schema_version: int = len(MIGRATIONS)
    keys_copied: int = 0
    keys_present: int = 0
    usage_lines: int = 0
    usage_requests: int = 0
    usage_tokens: int = 0
    notes: list[str] = field(default_factory=list)


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a SQLite file opened read-only; none when the file or table does not exist."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no such table: nothing of that kind was written
        return []
    finally:
        db.close()


def migrate_sqlite(keys_db: Path, dsn: str) -> MigrationSummary:
    """Copy keys and the usage ledger from `keys_db` (and its keys-usage.db) to `dsn`."""
    summary = MigrationSummary(str(keys_db), redact(dsn))
    keys = _rows(keys_db, f"SELECT {KEY_COLUMNS}, revoked_at FROM api_keys")
    usage = _rows(
        usage_db_path(keys_db),
        "SELECT key_id, model, hour, requests, prompt_tokens, completion_tokens FROM usage",
    )
    if not keys_db.exists():
        summary.notes.append(f"{keys_db} does not exist: no keys to copy")
    origin = f"sqlite:{keys_db.resolve()}"
    conn = connect(dsn)
    try:
        with conn.transaction():
            for row in keys:
                cur = conn.execute(COPY_KEY, row)
                inserted = cur.fetchone()
                if inserted and inserted[0]:
                    summary.keys_copied += 1
                else:
                    summary.keys_present += 1
            for key_id, model, hour, requests, prompt, completion in usage:
                conn.execute(
                    COPY_USAGE, (key_id, model, hour, origin, requests, prompt, completion)
                )
                summary.usage_lines += 1
                summary.usage_requests += int(requests)
                summary.usage_tokens += int(prompt) + int(completion)
    finally:
        conn.close()
    return summary
