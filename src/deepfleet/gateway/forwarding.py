"""Forwarding: from an admitted request to the proxy's answer.

An admitted request holds an admission slot, one of its key's slots and its tokens/min
reservation (admission.py); the `done` callback gives them back once, with the request's
outcome. `forward` calls it itself when routing, tokenizing or the proxy raises, or the client
goes away before the proxy answered, so no failure leaks a slot. Without a ready replica the
answer is 503 no_ready_replica. Otherwise the proxy (proxy.py) tries the model's ready
replicas in the order its routing policy gives for this request.

Every call the gateway makes to the load balancer (deepfleet.routing) is in `routed`: starting
and stopping its feeds with the app, the request's route and decision, and the proxy's forward
along the decided order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

from starlette.responses import Response

from deepfleet.gateway import requests
from deepfleet.gateway.admission import Admission
from deepfleet.gateway.auth import Principal
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.pd import PdPath
from deepfleet.gateway.proxy import Forward, Outcome, Proxy, wait_counted
from deepfleet.gateway.relay import StreamRelay
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.routing import Endpoint
from deepfleet.routing.endpoints import EndpointTable
from deepfleet.routing.feeds import RoutingFeeds

Done = Callable[[Outcome], None]
Answer = Response | StreamRelay
Send = Callable[[Forward, list[Endpoint], Done], Awaitable[Answer]]


class Routed(NamedTuple):
    running: Callable[[], contextlib.AbstractAsyncContextManager[None]]
    """Enter for the app's lifespan: the load balancer's feeds run while inside."""
    send: Send
    """`send(req, ready_endpoints, done)`: the proxy's answer to `req`."""


def routed(feeds: RoutingFeeds, proxy: Proxy) -> Routed:
    """The load balancer's whole part in the gateway.

    `send` asks the router for the request's order of the ready endpoints and hands it to the
    proxy. It is not a coroutine function: when the request needs no tokens, it returns the
    proxy's coroutine for the caller to await, so a request passes through no coroutine beyond
    the proxy's own and its caller's.
    """
    router = feeds.router
    pd = PdPath(proxy)

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await feeds.start()
        try:
            yield
        finally:
            await feeds.stop()

    def send(req: Forward, endpoints: list[Endpoint], done: Done) -> Awaitable[Answer]:
        # A disaggregated model: prefill, then decode (pd.py). Any replica with a role, not the
        # first: while `apply` turns aggregated replicas into pools both kinds are ready, and
        # pd.py serves a replica without a role as a decode engine (it computes the prompt).
        for e in endpoints:  # a loop, not any(): no generator per request
            if e.role:
                return disaggregated(req, endpoints, done)
        route = router.request_now(req.model, req.body)
        if route is not None:
            return proxy.forward(req, router.decide(route, endpoints).order, done)
        return tokenized(req, endpoints, done)

    async def tokenized(req: Forward, endpoints: list[Endpoint], done: Done) -> Answer:
        route = await router.request(req.model, req.path, req.body)
        return await proxy.forward(req, router.decide(route, endpoints).order, done)

    async def disaggregated(req: Forward, endpoints: list[Endpoint], done: Done) -> Answer:
        route = router.request_now(req.model, req.body)
        if route is None:
            route = await router.request(req.model, req.path, req.body)
        return await pd.forward(req, route, router.snapshot, endpoints, done)

    return Routed(running, send)


class Forwarding:
    def __init__(
        self, table: EndpointTable, admission: Admission, settings: GatewaySettings, send: Send
    ) -> None:
        self.table = table
        self.admission = admission
        self.settings = settings
        self.send = send

    async def forward(
        self,
        path: str,
        body: bytes,
        fields: requests.Fields,
        who: Principal,
        started: float,
        reserved: int,
        gone: Callable[[], bool] = lambda: False,
    ) -> Answer:
        """The answer to an admitted request; its slots are given back when it ends.

        With no ready replica while one is starting or restarting (or ejected for now), the
        request waits for it up to its model's `queue_timeout_s`, holding its admission slot
        (the admission queue bounds how many wait); a client that leaves meanwhile frees it.
        """
        model = fields.model
        done = self.admission.finisher(model, who, len(body), reserved)
        try:
            endpoints = self.table.ready(model)
            if not endpoints:
                endpoints = await self._wait_for_replica(model, gone)
            if not endpoints:
                if gone():
                    done(Outcome("499", None, 0))
                else:
                    done(Outcome("503", 0, 0))
                return self._no_replica(model)
            key = who.key
            cap = tightest(
                getattr(fields, "reasoning_cap", None),
                key.reasoning_cap if key else None,
                self.settings.reasoning_cap,
            )
            commit = self.admission.committer(model, who, len(body))
            req = Forward(
                path, body, model, bool(fields.stream), who.name, cap, started, gone, commit
            )
            return await self.send(req, endpoints, done)
        except BaseException as exc:  # re-raised, after the slots are given back
            done(Outcome("499" if isinstance(exc, asyncio.CancelledError) else "500", None, 0))
            raise

    async def _wait_for_replica(self, model: str, gone: Callable[[], bool]) -> list[Endpoint]:
        table = self.table
        if not table.may_become_ready(model):
            return []
        timeout_s = table.queue_timeout_s(model)
        return await wait_counted(table, self.admission.metrics, model, timeout_s, gone)

    def _no_replica(self, model: str) -> Response:
        coming = self.table.may_become_ready(model)
        why = f"waited {self.table.queue_timeout_s(model):g}s" if coming else "none is starting"
        return error_response(
            503,
            f"no ready replica for model `{model}` ({why}); retry shortly",
            code="no_ready_replica",
            headers={"Retry-After": "1"},
        )


def tightest(request: float | None, key: int | None, config: int | None) -> int | None:
    """The effective reasoning cap: the smallest of those set (a request cannot raise the
    cap its key or the gateway sets, only lower it); None when none is."""
    cap = None if request is None else int(request)
    if key is not None and (cap is None or key < cap):
        cap = key
    if config is not None and (cap is None or config < cap):
        cap = config
    return cap
