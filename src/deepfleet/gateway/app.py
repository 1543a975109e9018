"""The gateway ASGI app: OpenAI surface, routing, and a streaming proxy that passes engine bytes
through unchanged.

Only what routing needs is parsed from a request (model, stream); the body goes upstream as
received. A replica that fails before the first byte is ejected and the next one is tried; once
bytes went to the client a failure ends the stream with an SSE error event and [DONE].
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import msgspec
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from deepfleet.gateway.endpoints import EndpointTable
from deepfleet.gateway.errors import error_response, sse_error
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.routing import RouteRequest, RoutingPolicy, build_policy

UPSTREAM_HEADERS = {"Content-Type": "application/json"}


class RoutedFields(msgspec.Struct):
    """The only fields the gateway reads; the rest of the body is the engine's business."""

    model: str
    stream: bool = False


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int = 8 * 1024 * 1024
    connect_timeout_s: float = 5.0
    # Longest silence between two chunks (or before the headers) from an engine.
    read_timeout_s: float = 600.0
    refresh_s: float = 0.2


class Gateway:
    def __init__(
        self,
        table: EndpointTable,
        settings: GatewaySettings = GatewaySettings(),
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self._policies: dict[str, RoutingPolicy] = {}
        self._session: aiohttp.ClientSession | None = None
        self._decoder = msgspec.json.Decoder(RoutedFields)

    # -- lifecycle -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.settings.connect_timeout_s,
            sock_read=self.settings.read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        )
        self.table.refresh()
        refresher = asyncio.create_task(self._refresh_loop())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await self._session.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            if self.table.refresh():
                for name, entry in self.table.models.items():
                    self.metrics.ready_replicas.labels(name).set(len(entry.endpoints))

    def app(self) -> Starlette:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)

    # -- small endpoints -------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        counts = {name: len(self.table.ready(name)) for name in self.table.models}
        ok = bool(counts) and all(counts.values())
        return JSONResponse({"ready": ok, "models": counts}, status_code=200 if ok else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(
            generate_latest(self.metrics.registry), media_type="text/plain; version=0.0.4"
        )

    async def list_models(self, request: Request) -> Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "deepfleet",
                "ready_replicas": len(self.table.ready(name)),
            }
            for name in self.table.models
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response:
        return await self._route(request, "/v1/chat/completions")

    async def completions(self, request: Request) -> Response:
        return await self._route(request, "/v1/completions")

    # -- the proxy -------------------------------------------------------------------------
    async def _route(self, request: Request, path: str) -> Response:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            return error_response(413, f"request body is over {limit} bytes", code="too_large")
        body = await request.body()
        if len(body) > limit:
            return error_response(413, f"request body is over {limit} bytes", code="too_large")
        try:
            fields = self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            param = _param_of(str(exc))
            return error_response(
                400, f"invalid request: {exc}", param=param, code="invalid_value" if param else None
            )
        except msgspec.DecodeError:
            return error_response(400, "request body is not valid JSON", code="invalid_json")
        entry = self.table.models.get(fields.model)
        if entry is None:
            return error_response(
                404,
                f"The model `{fields.model}` does not exist.",
                param="model",
                code="model_not_found",
            )
        endpoints = self.table.ready(fields.model)
        if not endpoints:
            self.metrics.requests.labels(fields.model, "503").inc()
            return error_response(
                503,
                f"no ready replica for model `{fields.model}`; retry shortly",
                code="no_ready_replica",
                headers={"Retry-After": "1"},
            )
        policy = self._policies.get(fields.model)
        if policy is None or policy.name != entry.routing:
            policy = self._policies[fields.model] = build_policy(entry.routing)
        assert self._session is not None
        last_error = "no replica answered"
        for attempt, ep in enumerate(policy.order(RouteRequest(fields.model, body), endpoints)):
            if attempt:
                self.metrics.retries.labels(fields.model).inc()
            try:
                upstream = await self._session.post(
                    ep.url + path, data=body, headers=UPSTREAM_HEADERS
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                last_error = f"replica {ep.replica_id}: {type(exc).__name__}"
                self.table.eject(ep.replica_id)
                self.metrics.ejections.labels(ep.replica_id).inc()
                continue
            if upstream.status >= 500 and attempt + 1 < len(endpoints):
                last_error = f"replica {ep.replica_id}: HTTP {upstream.status}"
                upstream.close()
                continue
            return await self._respond(upstream, fields, ep.replica_id, started)
        self.metrics.requests.labels(fields.model, "503").inc()
        return error_response(
            503,
            f"every replica of `{fields.model}` failed ({last_error}); retry shortly",
            code="upstream_unavailable",
            headers={"Retry-After": "1"},
        )

    async def _respond(
        self, upstream: aiohttp.ClientResponse, fields: RoutedFields, replica: str, started: float
    ) -> Response:
        model = fields.model
        self.table.in_flight[replica] += 1
        self.metrics.in_flight.labels(replica).inc()

        def done(status: str) -> None:
            self.table.in_flight[replica] -= 1
            self.metrics.in_flight.labels(replica).dec()
            self.metrics.requests.labels(model, status).inc()
            self.metrics.e2e.labels(model).observe(time.perf_counter() - started)

        content_type = upstream.headers.get("Content-Type", "application/json")
        if not (fields.stream and upstream.status == 200):
            try:
                data = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                upstream.close()
                done("502")
                return error_response(
                    502,
                    f"replica {replica} failed while answering: {type(exc).__name__}",
                    code="upstream_error",
                )
            upstream.release()
            self.metrics.ttft.labels(model).observe(time.perf_counter() - started)
            done(str(upstream.status))
            return Response(data, status_code=upstream.status, media_type=content_type)

        async def relay() -> AsyncIterator[bytes]:
            status = "200"
            first = True
            try:
                async for chunk in upstream.content.iter_any():
                    if first:
                        self.metrics.ttft.labels(model).observe(time.perf_counter() - started)
                        first = False
                    yield chunk
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = "502"
                yield sse_error(f"replica {replica} failed mid-stream: {type(exc).__name__}")
            except BaseException:
                status = "499"  # client went away: closing the upstream aborts the request
                raise
            finally:
                upstream.close()
                done(status)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(relay(), status_code=200, media_type=content_type, headers=headers)


def _param_of(message: str) -> str | None:
    """msgspec says `... - at `$.model``; OpenAI names the parameter."""
    marker = "at `$."
    if marker in message:
        return message.split(marker, 1)[1].split("`", 1)[0].split("[", 1)[0]
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    return None
