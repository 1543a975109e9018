"""Per-key limits and admission control.

Requests/min and tokens/min are token buckets kept in SQLite, so every gateway worker draws
from the same bucket. Tokens are known only after a response, so the token bucket must be
non-empty to start a request and is debited by the usage afterwards (it may go negative and
then blocks until it refills). Concurrency per key and the admission queue are per worker.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proto.keys import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key_id TEXT NOT NULL, kind TEXT NOT NULL, level REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (key_id, kind)
);
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0


class TokenBuckets:
    """Buckets of `capacity` that refill at capacity per minute. Each call is one short
    SQLite transaction (tens of microseconds); only keys that carry limits pay it."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._db: sqlite3.Connection = connect(path)
        self._db.executescript(SCHEMA)
        self._clock = clock

    def close(self) -> None:
        self._db.close()

    def take(self, key_id: str, kind: str, capacity: int, cost: float, need: float) -> Verdict:
        """Debit `cost` if the bucket holds at least `need` after refilling."""
        now = self._clock()
        rate = capacity / 60.0
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT level, updated FROM buckets WHERE key_id=? AND kind=?", (key_id, kind)
            ).fetchone()
            level = (
                float(capacity)
                if row is None
                else min(float(capacity), row[0] + (now - row[1]) * rate)
            )
            allowed = level >= need
            if allowed:
                level -= cost
            db.execute(
                "INSERT OR REPLACE INTO buckets VALUES (?,?,?,?)", (key_id, kind, level, now)
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if allowed:
            return Verdict(True)
        return Verdict(False, max(1, math.ceil((need - level) / rate)))


class KeyConcurrency:
    """Requests in flight per key, in this worker."""

    def __init__(self) -> None:
        self._count: defaultdict[str, int] = defaultdict(int)

    def try_enter(self, key_id: str, limit: int | None) -> bool:
        if limit is not None and self._count[key_id] >= limit:
            return False
        self._count[key_id] += 1
        return True

    def leave(self, key_id: str) -> None:
        self._count[key_id] -= 1


class Admission:
    """At most `max_in_flight` requests upstream per worker; up to `max_queue` wait for a slot
    (429 beyond that), each at most `timeout_s` (then 503)."""

    def __init__(self, max_in_flight: int, max_queue: int, timeout_s: float) -> None:
        self._sem = asyncio.Semaphore(max_in_flight)
        self._max_queue = max_queue
        self._timeout_s = timeout_s
        self.waiting = 0

    async def enter(self) -> str | None:
        """None when admitted; "full" or "timeout" otherwise."""
        if not self._sem.locked():
            await self._sem.acquire()
            return None
        if self.waiting >= self._max_queue:
            return "full"
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self._timeout_s)
        except TimeoutError:
            return "timeout"
        finally:
            self.waiting -= 1
        return None

    def leave(self) -> None:
        self._sem.release()
