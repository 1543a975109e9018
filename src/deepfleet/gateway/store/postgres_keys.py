"""API keys in PostgreSQL: the records of keys.py in a database every gateway shares.

Every request asks `version()` and `by_hash()`; a round trip each would cost a request
hundreds of microseconds, so a gateway keeps a snapshot of the keys in memory and a background
task (started by `start()`) polls `keys_version`, which a trigger bumps on any change to
api_keys, every `poll_s`: a key created or revoked anywhere (the CLI, another gateway's admin
route) is seen by every gateway within `poll_s`. The CLI, which has no loop, reads directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import psycopg

from deepfleet.config.state import StateError, redact
from deepfleet.gateway.keys import (
    KEY_COLUMNS,
    SELECT_KEYS,
    ApiKey,
    hash_secret,
    key_from_row,
    key_params,
    new_key,
)
from deepfleet.gateway.store.postgres_conn import connect, first_line

log = logging.getLogger(__name__)
POLL_S = 0.25


class PostgresKeys:
    def __init__(self, dsn: str, poll_s: float = POLL_S) -> None:
        self._dsn = dsn
        self._conn = connect(dsn)
        self._poll_s = poll_s
        self._snapshot: tuple[int, dict[str, ApiKey]] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- management (CLI; the admin routes call these from a thread) ----------------------
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
        key, secret = new_key(
            name, rpm, tpm, max_concurrent, reasoning_cap, models, expires_at, admin
        )
        self._conn.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({', '.join(['%s'] * 11)})",
            key_params(key, hash_secret(secret)),
        )
        return key, secret

    def all(self) -> list[ApiKey]:
        rows = self._conn.execute(f"{SELECT_KEYS} ORDER BY created_at").fetchall()
        return [key_from_row(r) for r in rows]

    def revoke(self, id_or_name: str) -> list[ApiKey]:
        rows = self._conn.execute(
            "UPDATE api_keys SET revoked_at = %s WHERE revoked_at IS NULL AND (id = %s OR "
            "name = %s) RETURNING id, name, created_at, expires_at, revoked_at, rpm, tpm, "
            "max_concurrent, reasoning_cap, models, admin, hash",
            (time.time(), id_or_name, id_or_name),
        ).fetchall()
        return [key_from_row(r) for r in rows]

    # -- the request path: from the snapshot when a loop follows the table ----------------
    def by_hash(self) -> dict[str, ApiKey]:
        if self._snapshot is not None:
            return self._snapshot[1]
        return {r[11]: key_from_row(r) for r in self._conn.execute(SELECT_KEYS).fetchall()}

    def version(self) -> object:
        if self._snapshot is not None:
            return self._snapshot[0]
        row = self._conn.execute("SELECT v FROM keys_version").fetchone()
        return int(row[0]) if row else 0

    async def start(self) -> None:
        """Load the snapshot and follow the table until `stop()`."""
        try:
            aconn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            self._snapshot = await _load(aconn)
        except psycopg.Error as exc:
            raise StateError(f"cannot connect to {redact(self._dsn)}: {first_line(exc)}") from None
        self._task = asyncio.create_task(self._follow(aconn))

    async def _follow(self, aconn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        try:
            while True:
                await asyncio.sleep(self._poll_s)
                try:
                    if aconn.closed:
                        aconn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                    cur = await aconn.execute("SELECT v FROM keys_version")
                    row = await cur.fetchone()
                    if self._snapshot is None or (row and int(row[0]) != self._snapshot[0]):
                        self._snapshot = await _load(aconn)
                except psycopg.Error as exc:  # the database away: keep the last snapshot
                    log.warning("state database: keys not refreshed: %s", exc)
        finally:
            await aconn.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._snapshot = None

    def close(self) -> None:
        self._conn.close()


async def _load(
    aconn: psycopg.AsyncConnection[tuple[Any, ...]],
) -> tuple[int, dict[str, ApiKey]]:
    """The keys and the version they are at, read in one snapshot."""
    async with aconn.transaction():
        await aconn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur = await aconn.execute("SELECT v FROM keys_version")
        row = await cur.fetchone()
        cur = await aconn.execute(SELECT_KEYS)
        keys = {r[11]: key_from_row(r) for r in await cur.fetchall()}
    return (int(row[0]) if row else 0), keys
