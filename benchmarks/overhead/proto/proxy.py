"""The streaming proxy: pick replicas in the policy's order, retry before the first byte,
then relay the engine's bytes unchanged.

A replica that refuses, times out or answers 5xx before any byte reached the client is
ejected and the next one is tried. Once bytes went out a failure ends the stream with an SSE
error event and [DONE]. A client that goes away closes the upstream connection, which makes
vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from deepfleet.routing import Endpoint, RouteRequest, RoutingPolicy
from proto.endpoints import EndpointTable
from proto.errors import error_response, sse_error
from proto.metrics import GatewayMetrics
from proto.stream import StreamCounts, capped_tail, usage_of, within_cap

FAST_RELAY = os.environ.get("DFGW_FAST_RELAY") == "1"
RAW_ASGI = os.environ.get("DFGW_RAW_ASGI") == "1"
RAW_UPSTREAM = os.environ.get("DFGW_RAW_UPSTREAM") == "1"
SPLICE = RAW_UPSTREAM and RAW_ASGI and os.environ.get("DFGW_SPLICE") == "1"

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


RAW_STREAM_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class RawRelay:
    """The stream written with the server's own `send` (no StreamingResponse, no task group).
    A small task waits on `receive()`; the client's disconnect cancels the relay, whose
    `finally` closes the upstream (so the engine aborts), as before."""

    def __init__(
        self, body: AsyncIterator[bytes], on_close: Callable[[], None], media_type: str
    ) -> None:
        self.body = body
        self.on_close = on_close
        self.headers = [(b"content-type", media_type.encode("latin-1")), *RAW_STREAM_HEADERS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone: list[bool] = []
        watcher = asyncio.ensure_future(self._watch(receive, task, gone))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # the client left: a normal end for the server
        finally:
            watcher.cancel()
            self.on_close()

    @staticmethod
    async def _watch(receive: Receive, task: asyncio.Task[None], gone: list[bool]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.append(True)
                task.cancel()
                return


class SpliceRelay:
    """DFGW_SPLICE: the engine's body bytes are written to the client's transport from the
    upstream protocol's callback (no task wake-up, generator or ASGI message per chunk).
    Needs uvicorn's own `send` (a bound RequestResponseCycle method: its transport and flow
    control); anything else falls back to RawRelay. The task only waits for the end, and
    for the client to drain when its buffer is full (then the upstream read is paused)."""

    def __init__(
        self,
        proxy: Proxy,
        upstream: Any,
        req: Forward,
        replica: str,
        finish: Any,
        first: bytes,
        media_type: str,
    ) -> None:
        self.args = (proxy, upstream, req, replica, finish, first, media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy, upstream, req, replica, finish, first, media_type = self.args
        cycle = getattr(send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        flow = getattr(cycle, "flow", None)
        if transport is None or flow is None:
            relay = RawRelay(
                proxy._relay(upstream, req, replica, finish, first),
                lambda: (upstream.close(), finish(Outcome("499", None, 0))),
                media_type,
            )
            await relay(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        gone: list[bool] = []
        watcher = asyncio.ensure_future(RawRelay._watch(receive, task, gone))
        m = proxy.metrics
        counts = StreamCounts()
        status = "200"
        conn = upstream.conn
        headers = [(b"content-type", media_type.encode("latin-1")), *RAW_STREAM_HEADERS]
        write = transport.write
        add = counts.add
        clock = time.perf_counter

        def sink(body: bytes) -> bool:
            counts.last_at = clock()
            add(body)
            write(b"%x\r\n%s\r\n" % (len(body), body))
            return bool(flow.write_paused)

        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            counts.first_at = clock()
            m.ttft.labels(req.model).observe(counts.first_at - req.started)
            sink(first)
            for body in conn.buf:  # arrived since `first` was read
                sink(body)
            conn.buf, conn.size = [], 0
            conn.sink = sink
            while True:
                await conn.wait_event()
                if conn.complete:
                    break
                if conn.exc is not None:
                    raise conn.exc
                if conn.paused:
                    await flow.drain()
                    conn.resume()
            conn.sink = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = "502"
            conn.sink = None
            body = sse_error(f"replica {replica} failed mid-stream: {type(exc).__name__}")
            await send({"type": "http.response.body", "body": body, "more_body": False})
        except asyncio.CancelledError:
            status = "499"
            if not gone:
                raise
            task.uncancel()  # the client left: a normal end for the server
        except BaseException:
            status = "499"
            raise
        finally:
            conn.sink = None
            watcher.cancel()
            upstream.close()
            if counts.first_at is not None and counts.last_at is not None and counts.events > 2:
                m.itl.labels(req.model).observe(
                    (counts.last_at - counts.first_at) / (counts.events - 2)
                )
            if counts.reasoning or counts.content:
                m.reasoning_tokens.labels(req.model).observe(counts.reasoning)
                m.answer_tokens.labels(req.model).observe(counts.content)
            finish(Outcome(status, counts.prompt_tokens, counts.output_tokens))


class Proxy:
    def __init__(self, table: EndpointTable, metrics: GatewayMetrics) -> None:
        self.table = table
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None
        self.upstream: Any = None  # UpstreamPool when DFGW_RAW_UPSTREAM=1

    async def forward(
        self,
        req: Forward,
        policy: RoutingPolicy,
        endpoints: list[Endpoint],
        done: Callable[[Outcome], None],
    ) -> Response:
        assert self.session is not None, "proxy used outside the app's lifespan"
        order = policy.order(RouteRequest(req.model, req.body), endpoints)
        last_error = "no replica answered"
        tried: set[str] = set()
        try:
            for attempt, ep in enumerate(order):
                tried.add(ep.replica_id)
                if attempt:
                    self.metrics.retries.labels(req.model).inc()
                try:
                    if RAW_UPSTREAM:
                        upstream = await self.upstream.post(ep.url, req.path, req.body)
                    else:
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

        if SPLICE and req.reasoning_cap is None:
            return SpliceRelay(  # type: ignore[return-value]
                self, upstream, req, replica, finish, first, content_type
            )
        relay = RawRelay if RAW_ASGI else RelayResponse
        return relay(  # type: ignore[return-value]
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
            if FAST_RELAY:
                read = upstream.content.readany
                chunk = first
                while chunk:
                    counts.last_at = time.perf_counter()
                    before = counts.reasoning
                    counts.add(chunk)
                    if cap is not None and counts.reasoning > cap:
                        m.reasoning_capped.labels(req.model).inc()
                        counts.reasoning = cap
                        yield within_cap(chunk, cap - before) + capped_tail(req.model)
                        return
                    yield chunk
                    chunk = await read()
                return
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
