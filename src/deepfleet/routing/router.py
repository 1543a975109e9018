"""The Router: for a request, the order in which to try a model's replicas, and why.

It reads three things through small interfaces, each kept current elsewhere (feeds.py):
endpoint health (the ready endpoints, ejected ones left out: endpoints.py), engine load (a
mapping replica -> the engine's last scraped counts: scraper.py) and the prefix index
(cached and pending blocks per replica: deepfleet.kvcache.index.KvIndex). A request's prompt
becomes block hashes through `Prompts` (deepfleet.kvcache.prompts.PromptHasher), only for
models whose policy needs tokens.

Per request (the gateway's calls):

    request = router.request_now(model, body) or await router.request(model, path, body)
    decision = router.decide(request)      # decision.order: [] when no replica is ready

`decide` snapshots the endpoints (load, matched and pending blocks), asks the model's policy
(pure: snapshots in, order out) and records the decision: its metrics, the requests routed
since the last scrape, and, for policies that read KV events, the prompt's blocks as pending
on the chosen replica (`index.assume`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import Counter

from deepfleet.fleet.state import FleetState, ModelRoute
from deepfleet.routing.base import Decision, Endpoint, Need, RouteRequest, RoutingPolicy
from deepfleet.routing.metrics import RoutingMetrics
from deepfleet.routing.registry import build_policy, needs_of, policy_params

DEFAULT_BLOCK_SIZE = 16


class PrefixIndex(Protocol):
    def match(self, hashes: Sequence[int], now: float) -> Mapping[str, int]:
        """Per replica, leading blocks of `hashes` it holds or was sent."""
        ...

    def backlog(self, replica: str, now: float) -> int:
        """Blocks sent to `replica` and not announced yet."""
        ...

    def blocks_of(self, replica: str) -> int: ...

    def block_size(self, replica: str) -> int | None:
        """The block size the replica's events report, None before any."""
        ...

    def assume(self, replica: str, hashes: Sequence[int], until: float, at: float) -> None:
        """`hashes` were sent to `replica` at `at` (wall clock); pending until `until`."""
        ...


class EngineLoad(Protocol):
    @property
    def running(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def kv_usage(self) -> float: ...


class Health(Protocol):
    def ready(self, model: str) -> list[Endpoint]:
        """The endpoints to route to now (call once per request: it hands out half-open
        probes)."""
        ...


class Blocks(Protocol):
    @property
    def hashes(self) -> tuple[int, ...]: ...
    @property
    def tokens(self) -> int: ...
    @property
    def prefix_key(self) -> int | None: ...


class Prompts(Protocol):
    async def blocks(self, model: str, path: str, body: bytes, block_size: int) -> Blocks:
        """The prompt of `body` as blocks of `block_size` tokens; never raises."""
        ...


class Router:
    def __init__(
        self,
        health: Health,
        index: PrefixIndex,
        loads: Mapping[str, EngineLoad],
        prompts: Prompts,
        metrics: RoutingMetrics,
        settings: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`settings`: fleet.yaml's `kv_cache.routing` section as plain data (policies' own
        parameters and `pending_ttl_s`). `clock` is the index's `now`, `wall` its `at`."""
        self.health = health
        self.index = index
        self.loads = loads
        self.prompts = prompts
        self.metrics = metrics
        self.settings = dict(settings)
        self._pending_s = float(self.settings["pending_ttl_s"])
        self._clock = clock
        self._wall = wall
        self._models: dict[str, ModelRoute] = {}
        self._replica_model: dict[str, str] = {}
        self._tokens: frozenset[str] = frozenset()  # models whose policy reads tokens
        self._policies: dict[tuple[str, str], RoutingPolicy] = {}
        self._routed: defaultdict[str, int] = defaultdict(int)
        self._decided: dict[tuple[str, str, str], Counter] = {}

    # -- the fleet -------------------------------------------------------------------------
    def load(self, state: FleetState) -> None:
        self._models = {m.name: m for m in state.models}
        self._replica_model = {r.replica_id: r.model for r in state.replicas}
        self._tokens = frozenset(m.name for m in state.models if Need.TOKENS in needs_of(m.routing))

    def scraped(self, replica: str) -> None:
        """The engine's counts now include what was routed to it."""
        self._routed.pop(replica, None)

    def restarted(self, replica: str) -> None:
        """A new engine process: nothing routed to the old one is queued there."""
        self._routed.pop(replica, None)

    def policy(self, model: str) -> RoutingPolicy | None:
        """The model's policy with this fleet's parameters; None for a model not in the state."""
        route = self._models.get(model)
        if route is None:
            return None
        key = (model, route.routing)
        policy = self._policies.get(key)
        if policy is None:
            params = policy_params(route.routing, self.settings)
            policy = self._policies[key] = build_policy(route.routing, params)
        return policy

    def block_size(self, model: str) -> int:
        """The engines' block size as their events report it, else the fleet state's."""
        for replica, owner in self._replica_model.items():
            if owner == model and (size := self.index.block_size(replica)):
                return size
        route = self._models.get(model)
        return (route.block_size if route else None) or DEFAULT_BLOCK_SIZE

    # -- per request -----------------------------------------------------------------------
    def request_now(self, model: str, body: bytes) -> RouteRequest | None:
        """`request`'s answer without an await when the model's policy needs no tokens, else
        None (then await `request`)."""
        if model in self._tokens:
            return None
        return RouteRequest(model, body)

    async def request(self, model: str, path: str, body: bytes) -> RouteRequest:
        """The request as policies see it: block hashes and a prefix key when the model's
        policy uses them. Never raises: anything odd routes without tokens."""
        if model not in self._tokens:
            return RouteRequest(model, body)
        blocks = await self.prompts.blocks(model, path, body, self.block_size(model))
        return RouteRequest(model, body, blocks.hashes, blocks.tokens, blocks.prefix_key)

    def decide(
        self, request: RouteRequest, endpoints: Sequence[Endpoint] | None = None
    ) -> Decision:
        """The ready endpoints in the policy's order; an empty order when none is ready.
        `endpoints`: the model's ready endpoints when the caller already took them from the
        health table (each `ready` call hands out half-open probes, so take them once)."""
        if endpoints is None:
            endpoints = self.health.ready(request.model)
        if not endpoints:
            return Decision([], "none")
        policy = self.policy(request.model)
        if policy is None:
            return Decision(list(endpoints), "order")
        decision = policy.decide(request, self.snapshot(endpoints, request))
        self.record(policy, request, decision)
        return decision

    def snapshot(self, endpoints: Sequence[Endpoint], request: RouteRequest) -> list[Endpoint]:
        """Endpoints with the engines' load and, for this request, their matched blocks."""
        hashes = request.block_hashes
        now = self._clock()
        index = self.index
        matched = index.match(hashes, now) if hashes else {}
        loads = self.loads
        routed = self._routed
        out = []
        for e in endpoints:
            rid = e.replica_id
            load = loads.get(rid)
            out.append(
                Endpoint(
                    rid,
                    e.model,
                    e.url,
                    in_flight=e.in_flight,
                    running=load.running if load is not None else 0,
                    waiting=load.waiting if load is not None else 0,
                    kv_usage=load.kv_usage if load is not None else 0.0,
                    routed=routed.get(rid, 0),
                    matched_blocks=matched.get(rid, 0),
                    prefill_blocks=index.backlog(rid, now),
                    cached_blocks=index.blocks_of(rid),
                    role=e.role,
                )
            )
        return out

    def record(self, policy: RoutingPolicy, request: RouteRequest, decision: Decision) -> None:
        if not decision.order:
            return
        first = decision.order[0]
        self._routed[first.replica_id] += 1
        if Need.EVENTS in policy.needs and request.block_hashes:
            until = self._clock() + self._pending_s
            self.index.assume(first.replica_id, request.block_hashes, until, at=self._wall())
        model = request.model
        labels = (model, policy.name, decision.reason)
        decided = self._decided.get(labels)
        if decided is None:  # labels() validates and locks on every call: look up once
            decided = self._decided[labels] = self.metrics.decisions.labels(*labels)
        decided.inc()
        if request.block_hashes:
            m = self.metrics
            m.routed_blocks.labels(model).inc(len(request.block_hashes))
            m.matched_blocks.labels(model).inc(first.matched_blocks)
