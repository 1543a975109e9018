"""The gateway ASGI app: OpenAI surface, keys, limits and admission in front of the proxy.

Order of checks for /v1 generation routes: body size (413), key (401), request fields (400),
model (404), key's models (403), requests/min and tokens/min (429), key concurrency (429),
admission queue (429 full / 503 timeout), a ready replica (503), then the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepfleet.config.kvcache import read_routing_spec
from deepfleet.gateway import requests
from deepfleet.gateway.admin import AdminRoutes
from deepfleet.gateway.asgi import GatewayASGI, Incoming
from deepfleet.gateway.auth import Authenticator, AuthError, Principal
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.keys import ApiKey, KeyStore
from deepfleet.gateway.later import Later
from deepfleet.gateway.limits import Admission, KeyConcurrency, TokenBuckets
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.openapi import openapi_spec
from deepfleet.gateway.proxy import Forward, Outcome, Proxy
from deepfleet.gateway.relay import StreamRelay
from deepfleet.gateway.upstream import UpstreamPool
from deepfleet.kvcache.relay import RELAY_ENV
from deepfleet.observability.sd import observability_routes, state_file_reader
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


@dataclass(frozen=True)
class GatewaySettings:
    max_body_bytes: int = 8 * 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 600.0  # longest silence from an engine
    refresh_s: float = 0.2
    metrics_token: str | None = None
    reasoning_cap: int | None = None
    max_in_flight: int = 1024
    max_queue: int = 1024
    queue_timeout_s: float = 30.0


class Gateway:
    def __init__(
        self,
        table: EndpointTable,
        keys: KeyStore,
        buckets: TokenBuckets,
        settings: GatewaySettings = GatewaySettings(),
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.auth = Authenticator(keys)
        self.buckets = buckets
        self.concurrency = KeyConcurrency()
        self.admission = Admission(
            settings.max_in_flight, settings.max_queue, settings.queue_timeout_s
        )
        self.later = Later()  # metrics and usage accounting, off the requests' path
        self.proxy = Proxy(table, self.metrics, self.later)
        self.admin = AdminRoutes(keys, self.auth)
        # The load balancer: its router, and what keeps it current (per worker).
        self.routing = RoutingFeeds(
            table,
            read_routing_spec(table.path.parent).model_dump(),
            registry=self.metrics.registry,
            relay=os.environ.get(RELAY_ENV),
        )
        self.router = self.routing.router

    # -- lifecycle -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.proxy.upstream = UpstreamPool(
            self.settings.connect_timeout_s, self.settings.read_timeout_s, on_sent=self.later.run
        )
        self._on_refresh()
        await self.routing.start()
        refresher = asyncio.create_task(self._refresh_loop())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await self.routing.stop()
            self.proxy.upstream.close()
            self.later.run()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            self._on_refresh()

    def _on_refresh(self) -> None:
        if self.table.refresh():
            for name, entry in self.table.models.items():
                self.metrics.ready_replicas.labels(name).set(len(entry.endpoints))

    def app(self) -> GatewayASGI:
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/models", self.list_models, methods=["GET"]),
            # GatewayASGI serves these before Starlette; listed for 405 on other methods.
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            *self.admin.routes(),
            # Prometheus HTTP service discovery (/sd/targets) and the fleet's own state as
            # metrics (/metrics/fleet).
            *observability_routes(state_file_reader(self.table.path), self.settings.metrics_token),
        ]
        rest = Starlette(routes=routes, lifespan=self.lifespan)
        return GatewayASGI(self._route, GENERATION_PATHS, rest)

    # -- small endpoints -------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        counts = {name: len(self.table.ready(name)) for name in self.table.models}
        ok = bool(counts) and all(counts.values())
        return JSONResponse({"ready": ok, "models": counts}, status_code=200 if ok else 503)

    async def prometheus(self, request: Request) -> Response:
        token = self.settings.metrics_token
        if token and request.headers.get("authorization") != f"Bearer {token}":
            return error_response(401, "/metrics needs the metrics token", code="unauthorized")
        self.later.run()
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_spec())

    async def list_models(self, request: Request) -> Response:
        who = self.auth.authenticate(request.headers.get("authorization"))
        if isinstance(who, AuthError):
            return error_response(who.status, who.message, code=who.code)
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "deepfleet",
                "max_model_len": entry.max_model_len,
                "ready_replicas": len(entry.endpoints),
            }
            for name, entry in self.table.models.items()
            if who.key is None or who.key.allows(name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response | StreamRelay:
        return await self._route(Incoming(request.scope, request.receive), request.url.path)

    completions = chat_completions

    # -- generation routes -----------------------------------------------------------------
    def _reject(
        self,
        reason: str,
        status: int,
        message: str,
        *,
        code: str,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> Response:
        self.metrics.rejected.labels(reason).inc()
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return error_response(status, message, param=param, code=code, headers=headers)

    async def _route(self, request: Incoming, path: str) -> Response | StreamRelay:
        started = time.perf_counter()
        limit = self.settings.max_body_bytes
        declared = request.content_length
        if declared and declared.isdigit() and int(declared) > limit:
            return self._reject(
                "too_large", 413, f"request body is over {limit} bytes", code="request_too_large"
            )
        who = self.auth.authenticate(request.authorization)
        if isinstance(who, AuthError):
            return self._reject("auth", who.status, who.message, code=who.code)
        body = await request.body(limit)
        if len(body) > limit:
            return self._reject(
                "too_large", 413, f"request body is over {limit} bytes", code="request_too_large"
            )
        try:
            fields = requests.parse(path, body)
            entry = self.table.models.get(fields.model)
            if entry is None:
                return self._reject(
                    "unknown_model",
                    404,
                    f"The model `{fields.model}` does not exist.",
                    param="model",
                    code="model_not_found",
                )
            requests.check(fields, entry.max_model_len)
        except requests.RequestError as exc:
            return self._reject("invalid", 400, exc.message, param=exc.param, code=exc.code)
        if who.key is not None and not who.key.allows(fields.model):
            return self._reject(
                "forbidden_model",
                403,
                f"this API key may not use `{fields.model}`",
                param="model",
                code="model_not_allowed",
            )
        refusal = self._limits(who)
        if refusal is not None:
            return refusal
        key_id = who.key.id if who.key else ""
        max_conc = who.key.max_concurrent if who.key else None
        if not self.concurrency.try_enter(key_id, max_conc):
            return self._reject(
                "key_concurrency",
                429,
                f"this API key already has {max_conc} requests in flight",
                code="concurrency_limit",
                retry_after=1,
            )
        admitted = False
        try:
            verdict = self.admission.try_enter()
            if verdict == "wait":
                self.metrics.queue_depth.inc()
                verdict = await self.admission.wait()
                self.metrics.queue_depth.dec()
            if verdict == "full":
                return self._reject(
                    "queue_full",
                    429,
                    "the gateway queue is full; retry shortly",
                    code="queue_full",
                    retry_after=1,
                )
            if verdict == "timeout":
                return self._reject(
                    "no_capacity",
                    503,
                    f"no capacity: waited {self.settings.queue_timeout_s:g}s for an upstream slot",
                    code="no_capacity",
                    retry_after=1,
                )
            admitted = True
            return await self._forward(path, body, fields, who, started)
        finally:
            if not admitted:
                self.concurrency.leave(key_id)

    def _limits(self, who: Principal) -> Response | None:
        key = who.key
        if key is None:
            return None
        if key.rpm:
            v = self.buckets.take(key.id, "rpm", key.rpm, cost=1, need=1)
            if not v.allowed:
                return self._reject(
                    "rpm",
                    429,
                    f"rate limit: {key.rpm} requests per minute",
                    code="rate_limit_requests",
                    retry_after=v.retry_after_s,
                )
        if key.tpm:
            self.later.run()  # usage of finished requests is debited before it is checked
            v = self.buckets.take(key.id, "tpm", key.tpm, cost=0, need=1e-9)
            if not v.allowed:
                return self._reject(
                    "tpm",
                    429,
                    f"rate limit: {key.tpm} tokens per minute",
                    code="rate_limit_tokens",
                    retry_after=v.retry_after_s,
                )
        return None

    def _account(
        self, model: str, key_name: str, key: ApiKey | None, body_bytes: int, outcome: Outcome
    ) -> None:
        """Metrics and tokens/min usage of a finished request (deferred: later.py)."""
        self.metrics.finished(model, outcome.status, key_name).inc()
        prompt = outcome.prompt_tokens if outcome.prompt_tokens is not None else body_bytes // 4
        mm = self.metrics.of(model)
        mm.prompt_tokens.inc(prompt)
        mm.output_tokens.inc(outcome.output_tokens)
        if key is not None and key.tpm:
            self.buckets.take(
                key.id, "tpm", key.tpm, cost=prompt + outcome.output_tokens, need=-1e18
            )

    async def _forward(
        self, path: str, body: bytes, fields: requests.Fields, who: Principal, started: float
    ) -> Response | StreamRelay:
        model = fields.model
        key = who.key
        key_id = key.id if key else ""

        def done(outcome: Outcome) -> None:
            self.admission.leave()
            self.concurrency.leave(key_id)
            self.later.add(self._account, model, who.name, key, len(body), outcome)

        route = self.router.request_now(model, body) or await self.router.request(model, path, body)
        decision = self.router.decide(route)
        if not decision.order:
            done(Outcome("503", 0, 0))
            return error_response(
                503,
                f"no ready replica for model `{model}`; retry shortly",
                code="no_ready_replica",
                headers={"Retry-After": "1"},
            )
        cap = (
            getattr(fields, "reasoning_cap", None)
            or (key.reasoning_cap if key else None)
            or (self.settings.reasoning_cap)
        )
        req = Forward(path, body, model, bool(fields.stream), who.name, cap, started)
        return await self.proxy.forward(req, decision.order, done)
