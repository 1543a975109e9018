"""The proxy: pick replicas in the policy's order, retry before the first byte, then answer.

A replica that refuses, times out or answers 5xx before any byte reached the client is
ejected and the next one is tried. When every replica in the order failed so (an engine killed
a moment before the controller saw it, the others restarting), the request waits for another
to become ready up to its model's `queue_timeout_s`, as one arriving with none ready does,
and goes on there; only then, or when none is coming, is the answer a 503.

A non-streamed answer is read whole before the client gets a byte, so an engine that fails
while computing it costs a retry of the whole request on the next replica. A streamed answer
is handed to the relay (relay.py) once its first bytes came; a failure after that migrates the
stream to another replica (migration.py) up to the model's `migration_limit`, then ends it
with an SSE error event and [DONE]. A client that goes away
closes the upstream connection, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge, Histogram
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deepfleet.gateway.errors import error_response
from deepfleet.gateway.later import Later
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.migration import Migrator
from deepfleet.gateway.relay import Commit, Outcome, StreamRelay, committed
from deepfleet.gateway.stream import cap_answer, usage_of
from deepfleet.gateway.turns import Turns
from deepfleet.gateway.upstream import UpstreamError, UpstreamPool, UpstreamResponse
from deepfleet.routing.base import Endpoint
from deepfleet.routing.endpoints import EndpointTable

__all__ = ["Forward", "Outcome", "Proxy", "wait_counted"]

RETRY_PAUSE_S = 0.1
"""Pause before looking for another replica after every one tried failed."""


async def wait_counted(
    table: EndpointTable,
    metrics: GatewayMetrics,
    model: str,
    timeout_s: float,
    gone: Callable[[], bool],
) -> list[Endpoint]:
    """`table.wait_ready`, counted in `deepfleet_waiting_for_replica{model}` while it waits
    (the autoscaler starts a model at zero replicas from it) and, when a replica came, in
    `deepfleet_replica_wait_seconds`."""
    waiting = metrics.waiting_for_replica.labels(model)
    waiting.inc()
    started = time.monotonic()
    try:
        endpoints = await table.wait_ready(model, timeout_s, gone)
    finally:
        waiting.dec()
    if endpoints:
        metrics.replica_wait.observe(time.monotonic() - started)
    return endpoints


@dataclass(slots=True)
class Forward:
    path: str
    body: bytes
    model: str
    stream: bool
    key_name: str
    reasoning_cap: int | None
    started: float
    gone: Callable[[], bool] = field(default=lambda: False)
    """True once the client left (a wait for a replica ends then)."""
    commit: Commit | None = None
    """Awaited with the usage before the answer's end leaves (admission.py `committer`)."""


class Proxy:
    def __init__(
        self,
        table: EndpointTable,
        metrics: GatewayMetrics,
        later: Later,
        upstream: UpstreamPool,
        migrator: Migrator | None = None,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self.later = later
        self.upstream = upstream  # the app's lifespan closes it
        self.turns = Turns()
        self.migrator = migrator or Migrator(table, upstream, metrics, 3, 30.0)

    async def forward(
        self,
        req: Forward,
        order: list[Endpoint],
        done: Callable[[Outcome], None],
    ) -> Response | StreamRelay:
        deadline: float | None = None
        last_error = "no replica answered"
        while True:
            answer, last_error = await self._first_answer(req, order, done, last_error)
            if answer is not None:
                return answer
            if deadline is None:
                deadline = time.monotonic() + self.table.queue_timeout_s(req.model)
            order = await self._another(req, deadline)
            if not order:
                break
        done(Outcome("499" if req.gone() else "503", None, 0))
        return error_response(
            503,
            f"every replica of `{req.model}` failed ({last_error}); retry shortly",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        )

    async def _another(self, req: Forward, deadline: float) -> list[Endpoint]:
        """Ready replicas to try after every one tried failed: those not ejected now, once
        any is (the failed ones are ejected; a restarted one is offered again). [] at the
        deadline, when the client left or when no replica of the model is coming."""
        table = self.table
        await asyncio.sleep(RETRY_PAUSE_S)
        left = deadline - time.monotonic()
        if left <= 0 or req.gone():
            return []
        order = await wait_counted(table, self.metrics, req.model, left, req.gone)
        if order:
            self.metrics.retries.labels(req.model).inc()
        return order

    async def _first_answer(
        self,
        req: Forward,
        order: list[Endpoint],
        done: Callable[[Outcome], None],
        last_error: str,
    ) -> tuple[Response | StreamRelay | None, str]:
        """The answer of the first replica in `order` that gives one, else (None, why not)."""
        pool = self.upstream
        tried: set[str] = set()
        try:
            for attempt, ep in enumerate(order):
                tried.add(ep.replica_id)
                if attempt:
                    self.metrics.retries.labels(req.model).inc()
                try:
                    upstream = await pool.post(ep.url, req.path, req.body)
                except (UpstreamError, TimeoutError) as exc:
                    last_error = f"replica {ep.replica_id}: {type(exc).__name__}"
                    self._eject(ep.replica_id)
                    continue
                if upstream.status >= 500 and attempt + 1 < len(order):
                    last_error = f"replica {ep.replica_id}: HTTP {upstream.status}"
                    upstream.close()
                    self._eject(ep.replica_id)
                    continue
                first = b""
                if not (req.stream and upstream.status == 200):
                    # Read whole before the client gets a byte: a failure is a retry.
                    try:
                        first = await upstream.read_all()
                    except (UpstreamError, TimeoutError) as exc:
                        last_error = f"replica {ep.replica_id} failed while answering: " + (
                            type(exc).__name__
                        )
                        upstream.close()
                        self._eject(ep.replica_id)
                        continue
                else:
                    # Wait for the first event (the engine's prefill) before answering the
                    # client: an engine that dies now costs a retry, not a broken stream.
                    try:
                        first = await upstream.read()
                    except (UpstreamError, TimeoutError) as exc:
                        last_error = f"replica {ep.replica_id}: {type(exc).__name__}"
                    else:
                        last_error = f"replica {ep.replica_id}: closed before the first byte"
                    if not first:
                        upstream.close()
                        self._eject(ep.replica_id)
                        continue
                self.table.succeeded(ep.replica_id)
                return self._respond(upstream, req, ep.replica_id, done, first, order), last_error
        finally:
            for ep in order:
                if ep.replica_id not in tried:
                    self.table.release_probe(ep.replica_id)
        return None, last_error

    def _eject(self, replica_id: str) -> None:
        self.table.eject(replica_id)
        self.metrics.ejections.labels(replica_id).inc()

    def _respond(
        self,
        upstream: UpstreamResponse,
        req: Forward,
        replica: str,
        done: Callable[[Outcome], None],
        first: bytes,
        order: list[Endpoint],
    ) -> Response | StreamRelay:
        mm = self.metrics.of(req.model)
        where = _Serving(replica, self.metrics.in_flight_of(replica))
        self.table.in_flight[replica] += 1
        self.later.add(where.gauge.inc)

        finished = False

        def finish(outcome: Outcome) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            self.table.in_flight[where.replica] -= 1
            done(outcome)
            self.later.add(_ended, where.gauge, mm.e2e, time.perf_counter() - req.started)

        def moved(old: str, new: str) -> None:
            self._eject(old)
            self.table.in_flight[old] -= 1
            self.table.in_flight[new] += 1
            gauge = self.metrics.in_flight_of(new)
            self.later.add(where.gauge.dec)
            self.later.add(gauge.inc)
            where.replica, where.gauge = new, gauge

        if not (req.stream and upstream.status == 200):
            return self._answer(upstream, req, first, finish)

        return StreamRelay(
            upstream,
            first,
            model=req.model,
            replica=replica,
            started=req.started,
            reasoning_cap=req.reasoning_cap,
            metrics=self.metrics,
            finish=finish,
            turns=self.turns,
            later=self.later,
            path=req.path,
            body=req.body,
            order=order,
            migrator=self.migrator,
            moved=moved,
            commit=req.commit,
        )

    def _answer(
        self,
        upstream: UpstreamResponse,
        req: Forward,
        data: bytes,
        finish: Callable[[Outcome], None],
    ) -> Response:
        """A non-streamed answer, read whole; the reasoning cap applies as for streams."""
        mm = self.metrics.of(req.model)
        self.later.add(mm.ttft.observe, time.perf_counter() - req.started)
        ok = upstream.status == 200
        prompt, completion, share = usage_of(data) if ok else (None, None, 0.0)
        reasoning = round(completion * share) if completion else 0
        if ok and req.reasoning_cap is not None and reasoning > req.reasoning_cap:
            capped = cap_answer(data, req.reasoning_cap, reasoning)
            if capped is not None:
                data, completion, reasoning = capped, req.reasoning_cap, req.reasoning_cap
                mm.reasoning_capped.inc()
        if completion:
            self.later.add(mm.reasoning_tokens.observe, reasoning)
            self.later.add(mm.answer_tokens.observe, completion - reasoning)
        written = req.commit(prompt, completion or 0) if ok and req.commit else None
        finish(Outcome(str(upstream.status), prompt, completion or 0, ok and bool(req.commit)))
        content_type = upstream.header(b"content-type", "application/json")
        if written is not None:
            return _Committed(written, data, upstream.status, content_type)
        return Response(data, status_code=upstream.status, media_type=content_type)


class _Committed(Response):
    """A whole answer that leaves once its usage line is committed (admission.py)."""

    def __init__(
        self, written: asyncio.Future[None], data: bytes, status: int, content_type: str
    ) -> None:
        super().__init__(data, status_code=status, media_type=content_type)
        self._written = written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await committed(self._written)
        await super().__call__(scope, receive, send)


@dataclass(slots=True)
class _Serving:
    """The replica a request is on now (a migrated stream moves)."""

    replica: str
    gauge: Gauge


def _ended(in_flight: Gauge, e2e: Histogram, seconds: float) -> None:
    in_flight.dec()
    e2e.observe(seconds)
