"""Rate limits, concurrency and the usage ledger in PostgreSQL, shared by every gateway.

The shared state is exact: a key's buckets and slots are rows changed in one statement each
(df_lease, df_give, df_enter in postgres_schema.py). A gateway spends from leases on them
(leases.py: what it may spend without a round trip, and how exact that is), so most requests
make no round trip at all; one that finds its lease empty makes one, awaited, on a pooled
connection (never blocking the event loop).

What does not decide admission runs in the background: idle leases going back, released
slots, and the usage ledger (group-committed, postgres_ledger.py). `stop()` gives everything
back and waits for those writes. A request's answer ends only once its usage line is
committed (`record_durably`), so a gateway SIGKILLed loses no usage of an answer a client got
whole; it loses its unspent leases, and its concurrency slots stop counting once its heartbeat
is `ttl_s` old.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from deepfleet.config.state import StateError, redact
from deepfleet.gateway.store.base import UsageRow, Verdict
from deepfleet.gateway.store.leases import Leases
from deepfleet.gateway.store.postgres_conn import connect, first_line
from deepfleet.gateway.store.postgres_ledger import LedgerWriter

log = logging.getLogger(__name__)
TIMEOUT_S = 2.0  # longest wait for a pooled connection, and statement_timeout
TTL_S = 10.0  # a gateway whose heartbeat is older no longer holds concurrency slots
USAGE = (
    "SELECT key_id, model, hour, sum(requests), sum(prompt_tokens), sum(completion_tokens) "
    "FROM usage GROUP BY key_id, model, hour ORDER BY hour, key_id, model"
)


class PostgresLimits:
    def __init__(self, dsn: str, pool_size: int = 4, ttl_s: float = TTL_S) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._ttl_s = ttl_s
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._pool: AsyncConnectionPool | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._sync: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leases = Leases()
        self._ledger = LedgerWriter(dsn)
        self._capacity: dict[tuple[str, str], int] = {}
        connect(dsn).close()  # the schema is there before any request (and the DSN works)

    async def start(self) -> None:
        # Buckets and slots are soft state: a PostgreSQL crash losing their last few hundred
        # milliseconds costs a little over-admission, so their commits skip the WAL flush;
        # the usage ledger writes on its own connection, durably (postgres_ledger.py).
        options = f"-c statement_timeout={int(TIMEOUT_S * 1000)} -c synchronous_commit=off"
        self._pool = AsyncConnectionPool(
            self._dsn,
            min_size=self._pool_size,
            max_size=self._pool_size,
            kwargs={"autocommit": True, "options": options, "application_name": "deepfleet"},
            timeout=TIMEOUT_S,
            open=False,
        )
        try:
            await self._pool.open(wait=True, timeout=10)
            await self._beat()
        except (psycopg.Error, PoolTimeout) as exc:
            raise StateError(f"cannot connect to {redact(self._dsn)}: {first_line(exc)}") from None
        self._heartbeat = asyncio.create_task(self._beat_forever())
        self._ledger.start()

    # -- admission: from the lease, or one round trip when it runs out --------------------
    async def take(
        self, key_id: str, kind: str, capacity: int, cost: float, need: float
    ) -> Verdict:
        leases = self._leases
        b = leases.balance(key_id, kind)
        self._capacity[key_id, kind] = capacity
        if leases.spend(b, cost, need):
            return Verdict(True)
        async with b.lock:  # one lease request per key at a time; the others wait for it
            if leases.spend(b, cost, need):
                return Verdict(True)
            if leases.clock() < b.short_until:
                return Verdict(False, max(1, math.ceil(b.retry_after_s)))
            least, most = leases.want(capacity, need, b.held)
            try:
                granted, level = await self._one(
                    "SELECT granted, level FROM df_lease(%s, %s, %s, %s, %s)",
                    (key_id, kind, float(capacity), least, most),
                )
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("state database: limit not checked: %s", exc)
                return Verdict(False, 1, unavailable=True)
            b.held += float(granted)
            if leases.spend(b, cost, need):
                return Verdict(True)
            leases.short(b, least - float(level), capacity)
            return Verdict(False, max(1, math.ceil(b.retry_after_s)))

    def settle(self, key_id: str, kind: str, capacity: int, tokens: float) -> None:
        """Local: the balance (debt or refund) goes back with the lease."""
        self._capacity[key_id, kind] = capacity
        self._leases.balance(key_id, kind).held -= tokens

    async def enter(self, key_id: str, limit: int | None) -> bool:
        if limit is None:
            return True
        s = self._leases.slot(key_id)
        if s.free <= 0:
            async with s.lock:
                if s.free <= 0:
                    try:
                        row = await self._one(
                            "SELECT df_enter(%s, %s, %s, %s, %s)",
                            (
                                key_id,
                                self.gateway_id,
                                limit,
                                self._ttl_s,
                                self._leases.slot_chunk(limit),
                            ),
                        )
                    except (psycopg.Error, PoolTimeout) as exc:
                        log.warning("state database: concurrency not checked: %s", exc)
                        return False
                    s.free += int(row[0])
                    if s.free <= 0:
                        return False
        s.free -= 1
        s.in_use += 1
        return True

    def leave(self, key_id: str, limit: int | None) -> None:
        if limit is None:
            return
        s = self._leases.slot(key_id)
        s.in_use -= 1
        s.free += 1
        s.used_at = self._leases.clock()
        if limit < 16:  # small limits: the slot goes back at once, so others see it free
            self._release(key_id, s.free)
            s.free = 0

    def record(self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._ledger.add(key_id, model, int(time.time() // 3600), prompt_tokens, completion_tokens)

    def record_durably(
        self, key_id: str, model: str, prompt_tokens: int, completion_tokens: int
    ) -> asyncio.Future[None] | None:
        hour = int(time.time() // 3600)
        ticket = self._ledger.add(key_id, model, hour, prompt_tokens, completion_tokens)
        return self._ledger.written(ticket)

    def usage(self) -> list[UsageRow]:
        if self._sync is None:
            self._sync = connect(self._dsn)
        rows = self._sync.execute(USAGE).fetchall()
        return [UsageRow(str(r[0]), str(r[1]), *(int(v) for v in r[2:])) for r in rows]

    async def stop(self) -> None:
        """Finish the background writes, give back this gateway's slots, close the pool."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._pool is not None:
            self._give_back(everything=True)
        await self._ledger.stop(2 * TIMEOUT_S)
        if self._pending:
            await asyncio.wait(self._pending, timeout=2 * TIMEOUT_S)
        if self._pool is not None:
            with contextlib.suppress(psycopg.Error, PoolTimeout):
                async with self._pool.connection() as conn:
                    await conn.execute(
                        "DELETE FROM slots WHERE gateway_id = %s", (self.gateway_id,)
                    )
                    await conn.execute("DELETE FROM gateways WHERE id = %s", (self.gateway_id,))
            await self._pool.close()
            self._pool = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    # -- helpers ---------------------------------------------------------------------------
    async def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...]:
        assert self._pool is not None, "PostgresLimits.start() was not awaited"
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.encode(), params)
            row = await cur.fetchone()
        assert row is not None
        return row

    def _spawn(self, sql: str, params: tuple[Any, ...]) -> None:
        task = asyncio.get_running_loop().create_task(self._write(sql, params))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        assert self._pool is not None
        try:
            async with self._pool.connection() as conn:
                await conn.execute(sql.encode(), params)
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("state database: write lost (%s): %s", sql.split()[0], exc)

    async def _beat(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO gateways VALUES (%s, extract(epoch FROM clock_timestamp())) "
                "ON CONFLICT (id) DO UPDATE SET seen = excluded.seen",
                (self.gateway_id,),
            )
            await conn.execute(
                "DELETE FROM gateways WHERE seen < extract(epoch FROM clock_timestamp()) - %s",
                (60 * self._ttl_s,),
            )

    async def _beat_forever(self) -> None:
        """Every half `idle_s`: idle leases go back; every ttl_s/5: the heartbeat."""
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(self._leases.idle_s / 2)
            self._give_back()
            if time.monotonic() - last_beat >= self._ttl_s / 5:
                last_beat = time.monotonic()
                try:
                    await self._beat()
                except (psycopg.Error, PoolTimeout) as exc:
                    log.warning("state database: heartbeat failed: %s", exc)

    def _give_back(self, everything: bool = False) -> None:
        for key_id, kind, amount in self._leases.idle(everything):
            capacity = float(self._capacity.get((key_id, kind), 0))
            self._spawn("SELECT df_give(%s, %s, %s, %s)", (key_id, kind, capacity, amount))
        for key_id, free in self._leases.idle_slots(everything):
            self._release(key_id, free)

    def _release(self, key_id: str, n: int) -> None:
        if n:
            self._spawn(
                "UPDATE slots SET n = n - %s WHERE key_id = %s AND gateway_id = %s",
                (n, key_id, self.gateway_id),
            )
