"""Forwarding: from an admitted request to the proxy's answer.

An admitted request holds an admission slot and one of its key's slots (admission.py); the
`done` callback gives both back once, with the request's outcome. Without a ready replica the
answer is 503 no_ready_replica. Otherwise the proxy (proxy.py) tries the model's ready
replicas in the order its routing policy gives for this request.

Every call the gateway makes to its routing context is in `routed`: starting and stopping it
with the app, the model's policy, the request's route, and the proxy's forward along them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

from starlette.responses import Response

from deepfleet.gateway import requests
from deepfleet.gateway.admission import Admission
from deepfleet.gateway.auth import Principal
from deepfleet.gateway.endpoints import EndpointTable
from deepfleet.gateway.errors import error_response
from deepfleet.gateway.proxy import Forward, Outcome, Proxy
from deepfleet.gateway.relay import StreamRelay
from deepfleet.gateway.settings import GatewaySettings
from deepfleet.kvcache.context import RoutingContext
from deepfleet.routing import Endpoint, RoutingPolicy

Done = Callable[[Outcome], None]
Answer = Response | StreamRelay
Send = Callable[[Forward, str, list[Endpoint], Done], Awaitable[Answer]]


class Routed(NamedTuple):
    running: Callable[[], contextlib.AbstractAsyncContextManager[None]]
    """Enter for the app's lifespan: the routing context runs while inside."""
    send: Send
    """`send(req, policy_name, ready_endpoints, done)`: the proxy's answer to `req`."""


def routed(kv: RoutingContext, proxy: Proxy) -> Routed:
    """The routing context's whole part in the gateway.

    `send` builds each model's policy once (per policy name) and hands the proxy the request's
    route. It is not a coroutine function: when the route needs no await (policies without
    tokens), it returns the proxy's coroutine for the caller to await, so a request passes
    through no coroutine beyond the proxy's own and its caller's.
    """
    policies: dict[tuple[str, str], RoutingPolicy] = {}

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await kv.start()
        try:
            yield
        finally:
            await kv.stop()

    def send(req: Forward, name: str, endpoints: list[Endpoint], done: Done) -> Awaitable[Answer]:
        policy = policies.get((req.model, name))
        if policy is None:
            policy = policies[(req.model, name)] = kv.policy(req.model, name)
        route = kv.prepare_now(req.model, req.body)
        if route is not None:
            return proxy.forward(req, route, policy, endpoints, done)
        return tokenized(req, policy, endpoints, done)

    async def tokenized(
        req: Forward, policy: RoutingPolicy, endpoints: list[Endpoint], done: Done
    ) -> Answer:
        route = await kv.prepare(req.model, req.path, req.body)
        return await proxy.forward(req, route, policy, endpoints, done)

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
        self, path: str, body: bytes, fields: requests.Fields, who: Principal, started: float
    ) -> Answer:
        """The answer to an admitted request; its slots are given back when it ends."""
        model = fields.model
        done = self.admission.finisher(model, who, len(body))
        endpoints = self.table.ready(model)
        if not endpoints:
            done(Outcome("503", 0, 0))
            return error_response(
                503,
                f"no ready replica for model `{model}`; retry shortly",
                code="no_ready_replica",
                headers={"Retry-After": "1"},
            )
        key = who.key
        cap = (
            getattr(fields, "reasoning_cap", None)
            or (key.reasoning_cap if key else None)
            or self.settings.reasoning_cap
        )
        req = Forward(path, body, model, bool(fields.stream), who.name, cap, started)
        return await self.send(req, self.table.models[model].routing, endpoints, done)
