"""The gateway's routes: health, readiness, metrics, models, the OpenAPI document, the admin
routes, and the generation entry that runs admission's checks (admission.py) in order and
hands an admitted request to forwarding (forwarding.py).

`Gateway` is given what it uses (the endpoint table, key store, buckets, settings, metrics and
the load balancer's feeds, deepfleet.routing.feeds.RoutingFeeds); `server.create_app` builds
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepfleet.gateway.admin import AdminRoutes
from deepfleet.gateway.admission import Admission
from deepfleet.gateway.asgi import GatewayASGI, Incoming
from deepfleet.gateway.auth import Authenticator, AuthError, bearer_is
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.forwarding import Forwarding, routed
from deepfleet.gateway.later import Later
from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.gateway.migration import Migrator
from deepfleet.gateway.openapi import openapi_spec
from deepfleet.gateway.origin import Origins
from deepfleet.gateway.proxy import Proxy
from deepfleet.gateway.relay import StreamRelay
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.gateway.store.base import KeyRecords, Limits
from deepfleet.gateway.upstream import UpstreamPool
from deepfleet.observability.sd import observability_routes, state_file_reader
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class Gateway:
    def __init__(
        self,
        table: EndpointTable,
        keys: KeyRecords,
        buckets: Limits,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        routing: RoutingFeeds,
    ) -> None:
        self.table = table
        self.keys = keys
        self.buckets = buckets
        self.settings = settings
        self.metrics = metrics
        self.later = Later()  # metrics and usage accounting, off the requests' path
        self.auth = Authenticator(keys)
        self.admission = Admission(table, self.auth, buckets, settings, metrics, self.later)
        pool = UpstreamPool(
            settings.connect_timeout_s,
            settings.read_timeout_s,
            on_sent=self.later.run,
            engine_key=settings.engine_key,
        )
        migrator = Migrator(
            table, pool, metrics, settings.migration_limit, settings.stall_timeout_s
        )
        self.proxy = Proxy(table, metrics, self.later, pool, migrator)
        self.routing = routed(routing, self.proxy)
        self.forwarding = Forwarding(table, self.admission, settings, self.routing.send)
        self.admin = AdminRoutes(keys, self.auth)
        # Whoever polls the state file first (this loop or the feeds'), the gauge follows it.
        table.follower.listen(lambda _: self._count_ready())

    # -- lifecycle -------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._on_refresh()
        await self.keys.start()
        await self.buckets.start()
        try:
            async with self.routing.running():
                refresher = asyncio.create_task(self._refresh_loop())
                try:
                    yield
                finally:
                    refresher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await refresher
        finally:
            self.proxy.upstream.close()
            self.later.run()
            await self.buckets.stop()  # after later.run(): the last usage is written
            await self.keys.stop()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            self._on_refresh()

    def _on_refresh(self) -> None:
        self.table.refresh()

    def _count_ready(self) -> None:
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
        return GatewayASGI(
            self._route, GENERATION_PATHS, rest, Origins(self.settings.allowed_hosts)
        )

    # -- small endpoints -------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        counts = {name: len(self.table.ready(name)) for name in self.table.models}
        # a cold model (scaled to zero) is served: its requests wait for the replica they start
        cold = {name for name, e in self.table.models.items() if e.status == "cold"}
        ok = bool(counts) and all(n or name in cold for name, n in counts.items())
        return JSONResponse({"ready": ok, "models": counts}, status_code=200 if ok else 503)

    async def prometheus(self, request: Request) -> Response:
        token = self.settings.metrics_token
        if token and not bearer_is(request.headers.get("authorization"), token):
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
                # ready, starting, cold (at zero replicas: a request starts one and waits for
                # it) or unavailable; OpenAI clients and Open-WebUI ignore fields they don't know
                "status": entry.status,
            }
            for name, entry in self.table.models.items()
            if who.key is None or who.key.allows(name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def chat_completions(self, request: Request) -> Response | StreamRelay:
        return await self._route(Incoming(request.scope, request.receive), request.url.path)

    completions = chat_completions

    # -- the generation entry ------------------------------------------------------------
    async def _route(self, request: Incoming, path: str) -> Response | StreamRelay:
        """Admission's checks in their order (admission.py), then forwarding."""
        started = time.perf_counter()
        admission = self.admission
        refusal = admission.declared_size(request.content_length)
        if refusal is not None:
            return refusal
        who = admission.key(request.authorization)
        if isinstance(who, Response):
            return who
        key = who.key
        # The three limit steps return at once for a key without limits (or no key): skipped
        # then, a coroutine less each on every such request.
        limited = key is not None and (key.max_concurrent is not None or key.rpm or key.tpm)
        if limited:
            refusal = await admission.enter_key(key)  # before the body: a busy key costs no read
            if refusal is not None:
                return refusal
        reserved = 0
        admitted = False
        try:  # from here every refusal or failure gives back the key's slot and reservation
            if limited:
                refusal = await admission.requests_per_minute(key)
                if refusal is not None:
                    return refusal
            body = await request.body(self.settings.max_body_bytes)
            fields = admission.fields(path, body)
            if isinstance(fields, Response):
                return fields
            refusal = admission.key_models(who, fields.model)
            if refusal is not None:
                return refusal
            if limited:
                tokens = await admission.tokens_per_minute(key, fields, len(body))
                if isinstance(tokens, Response):
                    return tokens
                reserved = tokens
            verdict = admission.queue.try_enter()
            if verdict is not None:  # no free upstream slot: wait for one, or be refused
                refusal = await admission.queued(verdict)
                if refusal is not None:
                    return refusal
            admitted = True
        finally:
            if not admitted:
                admission.give_back(key, reserved)
        return await self.forwarding.forward(
            path, body, fields, who, started, reserved, request.gone
        )
