"""Per-key limits and admission control; the SQLite state backend's `Limits`.

Requests/min and tokens/min are token buckets kept in SQLite, so every gateway worker draws
from the same bucket. Tokens are known only after a response, so the token bucket must be
non-empty to start a request and is debited by the usage afterwards (it may go negative and
then blocks until it refills). The usage ledger (requests and tokens per key, model and hour)
sits in the same file. With SQLite, concurrency per key and the admission queue are per worker;
the PostgreSQL backend (store/postgres_limits.py) shares concurrency across gateways too.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path

from deepfleet.gateway.keys import connect
from deepfleet.gateway.store.base import UsageRow, Verdict

__all__ = ["AdmissionQueue", "KeyConcurrency", "TokenBuckets", "Verdict"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key_id TEXT NOT NULL, kind TEXT NOT NULL, level REAL NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (key_id, kind)
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL, model TEXT NOT NULL, hour INTEGER NOT NULL,
    requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    PRIMARY KEY (key_id, model, hour)
);
"""
RECORD = (
    "INSERT INTO usage VALUES (?,?,?,1,?,?) ON CONFLICT (key_id, model, hour) DO UPDATE SET "
    "requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = completion_tokens + excluded.completion_tokens"
)


class TokenBuckets:
    """Buckets of `capacity` that refill at capacity per minute. Each call is one short
    SQLite transaction (tens of microseconds); only keys that carry limits pay it."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._db: sqlite3.Connection = connect(path)
        self._db.executescript(SCHEMA)
        self._clock = clock
        self._concurrency = KeyConcurrency()

    def close(self) -> None:
        self._db.close()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- Limits (store/base.py): SQLite answers without suspending -------------------------
    async def take(
        self, key_id: str, kind: str, capacity: int, cost: float, need: float
    ) -> Verdict:
        return self.take_now(key_id, kind, capacity, cost, need)

    def settle(self, key_id: str, kind: str, capacity: int, tokens: float) -> None:
        self.take_now(key_id, kind, capacity, cost=tokens, need=-1e18)

    async def enter(self, key_id: str, limit: int | None) -> bool:
        return self._concurrency.try_enter(key_id, limit)

    def leave(self, key_id: str, limit: int | None) -> None:
        self._concurrency.leave(key_id)

    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        hour = int(self._clock() // 3600)
        self._db.execute(RECORD, (key_id, model, hour, prompt_tokens, completion_tokens))

    def record_durably(
        self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> asyncio.Future[None] | None:
        self.record(key_id, model, prompt_tokens, completion_tokens)
        return None

    def usage(self) -> list[UsageRow]:
        rows = self._db.execute(
            "SELECT key_id, model, hour, requests, prompt_tokens, completion_tokens FROM usage "
            "ORDER BY hour, key_id, model"
        ).fetchall()
        return [UsageRow(str(r[0]), str(r[1]), *(int(v) for v in r[2:])) for r in rows]

    def take_now(self, key_id: str, kind: str, capacity: int, cost: float, need: float) -> Verdict:
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


class AdmissionQueue:
    """At most `max_in_flight` requests upstream per worker; up to `max_queue` wait for a slot
    (429 beyond that), each at most `timeout_s` (then 503). A freed slot goes to the longest
    waiter. Entering while a slot is free takes no await (it is on every request's path)."""

    def __init__(self, max_in_flight: int, max_queue: int, timeout_s: float) -> None:
        self._free = max_in_flight
        self._queue: deque[asyncio.Future[None]] = deque()
        self._max_queue = max_queue
        self._timeout_s = timeout_s

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def free(self) -> int:
        """Upstream slots free now."""
        return self._free

    def try_enter(self) -> str | None:
        """None when admitted; "wait" when the caller must `await wait()` for a slot; "full"
        when the queue is full too."""
        if self._free > 0 and not self._queue:
            self._free -= 1
            return None
        return "full" if len(self._queue) >= self._max_queue else "wait"

    async def wait(self) -> str | None:
        """After "wait": None once admitted, "timeout" after `timeout_s`."""
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(slot)
        try:
            async with asyncio.timeout(self._timeout_s):
                await slot
        except TimeoutError:
            if slot.done() and not slot.cancelled():
                return None  # handed a slot as time ran out: admitted after all
            return "timeout"
        except BaseException:
            if slot.done() and not slot.cancelled():
                self.leave()  # handed a slot but going away: pass it on
            raise
        finally:
            if not slot.done() or slot.cancelled():
                with contextlib.suppress(ValueError):
                    self._queue.remove(slot)
        return None

    def leave(self) -> None:
        while self._queue:
            slot = self._queue.popleft()
            if not slot.done():
                slot.set_result(None)
                return
        self._free += 1
