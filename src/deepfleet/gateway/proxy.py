"""The streaming proxy: pick replicas in the policy's order, retry before the first byte,
then relay the engine's bytes unchanged.

A replica that refuses, times out or answers 5xx before any byte reached the client is
ejected and the next one is tried. Once bytes went out a failure ends the stream with an SSE
error event and [DONE]. A client that goes away closes the upstream connection, which makes
vLLM abort the request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from deepfleet.gateway.endpoints import EndpointTable
from deepfleet.gateway.errors import error_response, sse_error
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.stream import StreamCounts, capped_tail, usage_of, within_cap
from deepfleet.routing import Endpoint, RouteRequest, RoutingPolicy

UPSTREAM_HEADERS = {"Content-Type": "application/json"}
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Outcome:
    """What a finished request reports back (for limits and metrics)."""

    status: str
    prompt_tokens: int | None
    output_tokens: int


@dataclass(frozen=True)
class Forward:
    path: str
    body: bytes
    model: str
    stream: bool
    key_name: str
    reasoning_cap: int | None
    started: float


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


class RelayResponse(StreamingResponse):
    """A StreamingResponse that always releases its upstream, also when the client left
    before the first chunk (then the body generator never ran, so its `finally` cannot)."""

    def __init__(
        self, body: AsyncIterator[bytes], on_close: Callable[[], None], media_type: str
    ) -> None:
        super().__init__(body, status_code=200, media_type=media_type, headers=STREAM_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class Proxy:
    def __init__(self, table: EndpointTable, metrics: GatewayMetrics) -> None:
        self.table = table
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None

    async def forward(
        self,
        req: Forward,
        route: RouteRequest,
        policy: RoutingPolicy,
        endpoints: list[Endpoint],
        done: Callable[[Outcome], None],
    ) -> Response:
        assert self.session is not None, "proxy used outside the app's lifespan"
        order = policy.order(route, endpoints)
        last_error = "no replica answered"
        tried: set[str] = set()
        try:
            for attempt, ep in enumerate(order):
                tried.add(ep.replica_id)
                if attempt:
                    self.metrics.retries.labels(req.model).inc()
                try:
                    upstream = await self.session.post(
                        ep.url + req.path, data=req.body, headers=UPSTREAM_HEADERS
                    )
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last_error = f"replica {ep.replica_id}: {type(exc).__name__}"
                    self._eject(ep.replica_id)
                    continue
                if upstream.status >= 500 and attempt + 1 < len(order):
                    last_error = f"replica {ep.replica_id}: HTTP {upstream.status}"
                    upstream.close()
                    self._eject(ep.replica_id)
                    continue
                first = b""
                if req.stream and upstream.status == 200:
                    # Wait for the first event (the engine's prefill) before answering the
                    # client: an engine that dies now costs a retry, not a broken stream.
                    try:
                        first = await upstream.content.readany()
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        last_error = f"replica {ep.replica_id}: {type(exc).__name__}"
                    else:
                        last_error = f"replica {ep.replica_id}: closed before the first byte"
                    if not first:
                        upstream.close()
                        self._eject(ep.replica_id)
                        continue
                self.table.succeeded(ep.replica_id)
                return await self._respond(upstream, req, ep.replica_id, done, first)
        finally:
            for ep in order:
                if ep.replica_id not in tried:
                    self.table.release_probe(ep.replica_id)
        done(Outcome("503", None, 0))
        return error_response(
            503,
            f"every replica of `{req.model}` failed ({last_error}); retry shortly",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        )

    def _eject(self, replica_id: str) -> None:
        self.table.eject(replica_id)
        self.metrics.ejections.labels(replica_id).inc()

    async def _respond(
        self,
        upstream: aiohttp.ClientResponse,
        req: Forward,
        replica: str,
        done: Callable[[Outcome], None],
        first: bytes,
    ) -> Response:
        m = self.metrics
        self.table.in_flight[replica] += 1
        m.in_flight.labels(replica).inc()

        finished = False

        def finish(outcome: Outcome) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            self.table.in_flight[replica] -= 1
            m.in_flight.labels(replica).dec()
            m.e2e.labels(req.model).observe(time.perf_counter() - req.started)
            done(outcome)

        content_type = upstream.headers.get("Content-Type", "application/json")
        if not (req.stream and upstream.status == 200):
            try:
                data = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                upstream.close()
                finish(Outcome("502", None, 0))
                return error_response(
                    502,
                    f"replica {replica} failed while answering: {type(exc).__name__}",
                    code="upstream_error",
                )
            upstream.release()
            m.ttft.labels(req.model).observe(time.perf_counter() - req.started)
            prompt, completion, share = (
                usage_of(data) if upstream.status == 200 else (None, None, 0.0)
            )
            if completion:
                m.reasoning_tokens.labels(req.model).observe(round(completion * share))
                m.answer_tokens.labels(req.model).observe(completion - round(completion * share))
            finish(Outcome(str(upstream.status), prompt, completion or 0))
            return Response(data, status_code=upstream.status, media_type=content_type)

        def on_close() -> None:
            upstream.close()
            finish(Outcome("499", None, 0))

        return RelayResponse(
            self._relay(upstream, req, replica, finish, first), on_close, media_type=content_type
        )

    async def _relay(
        self,
        upstream: aiohttp.ClientResponse,
        req: Forward,
        replica: str,
        finish: Callable[[Outcome], None],
        first: bytes,
    ) -> AsyncIterator[bytes]:
        m = self.metrics
        counts = StreamCounts()
        status = "200"
        cap = req.reasoning_cap
        counts.first_at = time.perf_counter()
        m.ttft.labels(req.model).observe(counts.first_at - req.started)
        try:
            async for chunk in _chain(first, upstream.content.iter_any()):
                counts.last_at = time.perf_counter()
                before = counts.reasoning
                counts.add(chunk)
                if cap is not None and counts.reasoning > cap:
                    m.reasoning_capped.labels(req.model).inc()
                    counts.reasoning = cap
                    yield within_cap(chunk, cap - before) + capped_tail(req.model)
                    return
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = "502"
            yield sse_error(f"replica {replica} failed mid-stream: {type(exc).__name__}")
        except BaseException:
            status = "499"  # the client went away; closing the upstream aborts the request
            raise
        finally:
            upstream.close()
            if counts.first_at is not None and counts.last_at is not None and counts.events > 2:
                m.itl.labels(req.model).observe(
                    (counts.last_at - counts.first_at) / (counts.events - 2)
                )
            if counts.reasoning or counts.content:
                m.reasoning_tokens.labels(req.model).observe(counts.reasoning)
                m.answer_tokens.labels(req.model).observe(counts.content)
            finish(Outcome(status, counts.prompt_tokens, counts.output_tokens))
