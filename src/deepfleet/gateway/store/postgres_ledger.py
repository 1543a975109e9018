"""The usage ledger's writer for PostgreSQL: group commit.

A line per finished request, written at once, would be exact but costs a round trip and a
commit per request; at 32 streams on a busy host those trips (and the database process they
wake) took CPU from the gateway and added milliseconds to every first token
(benchmarks/ha/overhead.py). So lines wait in memory, added up per (key, model, hour), while
one write is in flight; the next write takes everything that came meanwhile, in one statement
on its own connection, committed durably (synchronous_commit on). Under light load each
request is written on its own right away; under heavy load writes batch themselves. A line is
lost only if its gateway is SIGKILLed before that write ends; a write that fails is kept and
retried. `written(ticket)` is a future of the write that holds a line: the gateway awaits it before
a request's last bytes leave (admission.py `committer`), so an answer a client received whole
is in the ledger even if its gateway is SIGKILLed right after.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

log = logging.getLogger(__name__)
RETRY_S = 1.0
UPSERT = (
    "INSERT INTO usage (key_id, model, hour, requests, prompt_tokens, completion_tokens) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[], "
    "%s::bigint[]) ON CONFLICT (key_id, model, hour, origin) DO UPDATE SET "
    "requests = usage.requests + excluded.requests, "
    "prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = usage.completion_tokens + excluded.completion_tokens"
)

Line = tuple[str, str, int]  # key id, model, hour


class LedgerWriter:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lines: dict[Line, list[int]] = {}
        self._wake = asyncio.Event()
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._added = 0  # tickets: lines added so far
        self._written = 0  # every line up to this ticket is committed
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failing = False  # the last write failed: nobody waits while the database is out

    def add(self, key_id: str, model: str, hour: int, prompt: int, completion: int) -> int:
        """Queue one request's line; returns its ticket for `written`."""
        totals = self._lines.setdefault((key_id, model, hour), [0, 0, 0])
        totals[0] += 1
        totals[1] += prompt
        totals[2] += completion
        self._added += 1
        self._wake.set()
        return self._added

    def written(self, ticket: int) -> asyncio.Future[None] | None:
        """A future done once the line of `ticket` is committed; None if it is already, or if
        writes are failing (the database is out: answers keep flowing, lines are retried)."""
        if self._written >= ticket or self._failing:
            return None
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, fut))
        return fut

    def _wrote(self, upto: int) -> None:
        self._written = upto
        waiting = []
        for ticket, fut in self._waiters:
            if ticket <= upto:
                if not fut.done():
                    fut.set_result(None)
            elif not fut.done():
                waiting.append((ticket, fut))
        self._waiters = waiting

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self, timeout_s: float) -> None:
        """Write what is left, then close."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except TimeoutError:
                log.error("state database: %d usage lines not written", len(self._lines))
        for _, fut in self._waiters:  # nobody waits on a closed writer
            if not fut.done():
                fut.set_result(None)
        self._waiters = []
        if self._conn is not None:
            await self._conn.close()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._lines:
                batch, self._lines = self._lines, {}
                upto = self._added
                self._failing = not await self._write(batch)
                if not self._failing:
                    self._wrote(upto)
                else:
                    for line, totals in batch.items():  # kept for the next try
                        mine = self._lines.setdefault(line, [0, 0, 0])
                        for i in range(3):
                            mine[i] += totals[i]
                    if self._closing:
                        log.error("state database: %d usage lines not written", len(self._lines))
                        return
                    await asyncio.sleep(RETRY_S)
                    self._wake.set()
                    continue
            if self._closing and not self._lines:
                return

    async def _write(self, batch: dict[Line, list[int]]) -> bool:
        cols: list[list[Any]] = [[], [], [], [], [], []]
        for (key_id, model, hour), (requests, prompt, completion) in batch.items():
            for col, value in zip(
                cols, (key_id, model, hour, requests, prompt, completion), strict=True
            ):
                col.append(value)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._dsn, autocommit=True, application_name="deepfleet"
                )
            await self._conn.execute(UPSERT.encode(), cols)
        except psycopg.Error as exc:
            log.warning("state database: usage not written yet (will retry): %s", exc)
            return False
        return True
