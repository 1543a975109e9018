"""The controller's autoscaler: replicas follow the load for models with `replicas: {min, max}`.

Every `interval_s`: read the gateway's /metrics (its TTFT and ITL histograms per model, the
admission queue) and each ready replica's /metrics (running, waiting, KV usage), turn them
into an Observation over the last `window_s` (histogram and counter deltas), ask the model's
decision core (deepfleet.autoscale) and, when it wants another count, scale:

- up: plan the model at the new count and start the plans beyond the current replicas
  (rollout.start: ready before they count; a replica that cannot start is stopped again);
- down: drain the newest replicas and stop them once idle (rollout.retire: the gateway routes
  nothing new to a draining replica, its streams finish within the gateway's drain grace).

Each decision is logged with its inputs and recorded in the state file's ModelRoute
(`desired`, `reason`), which `deepfleet status` shows. One scaling move per model at a time;
the model's decisions pause while it runs. Without a window of gateway scrapes (at start, or
when the gateway does not answer) nothing is decided: no traffic seen is not no traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from deepfleet.autoscale import Autoscaler, Decision, Observation, Targets
from deepfleet.config.autoscale import AutoscaleSpec, ReplicaRange
from deepfleet.config.schema import ModelSpec
from deepfleet.engines import get_adapter
from deepfleet.engines.load import parse_load
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.model_paths import model_paths
from deepfleet.fleet.rollout import ApplyFailed, retire, start
from deepfleet.fleet.state import ReplicaState

log = logging.getLogger(__name__)
TTFT = "deepfleet_time_to_first_token_seconds"
ITL = "deepfleet_inter_token_latency_seconds"
QUEUE = "deepfleet_admission_queue_depth"
Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True)
class _Scrape:
    at: float
    ttft: dict[str, Buckets]
    itl: dict[str, Buckets]
    queue: int


def targets(spec: ModelSpec) -> Targets:
    """The decision core's settings from one model's fleet.yaml entry.

    `min: 0` is held at 1 here: a model at zero replicas needs the gateway to hold its
    requests and report them (it answers 503 today, which no metric here sees), else the
    autoscaler could never bring it back.
    """
    r = spec.replicas
    assert isinstance(r, ReplicaRange)
    a = spec.autoscale or AutoscaleSpec()
    return Targets(
        min_replicas=max(r.min, 1), max_replicas=r.max, ttft_p90_s=a.ttft_p90_ms / 1e3,
        itl_p90_s=a.itl_p90_ms / 1e3, queue_per_replica=a.queue_per_replica,
        up_cooldown_s=a.up_cooldown_s, down_cooldown_s=a.down_cooldown_s,
        idle_timeout_s=a.idle_timeout_s, utilization=a.utilization,
    )  # fmt: skip


def parse_gateway(text: str, at: float) -> _Scrape:
    ttft: dict[str, Buckets] = {}
    itl: dict[str, Buckets] = {}
    queue = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == QUEUE:
                queue += s.value
            elif s.name.endswith("_bucket") and family.name in (TTFT, ITL):
                into = ttft if family.name == TTFT else itl
                model = s.labels.get("model", "")
                into.setdefault(model, {})[float(s.labels["le"])] = s.value
    return _Scrape(at, ttft, itl, int(queue))


def p90(old: Buckets | None, new: Buckets | None) -> tuple[float | None, float]:
    """p90 (a bucket's upper bound; the last finite one for +Inf) of the samples between
    two scrapes of a histogram, and how many samples there were."""
    if not new:
        return None, 0.0
    old = old or {}
    bounds = sorted(new)
    delta = [new[b] - old.get(b, 0.0) for b in bounds]
    total = delta[-1]
    if total <= 0:
        return None, 0.0
    for bound, count in zip(bounds, delta, strict=True):
        if count >= 0.9 * total:
            finite = [b for b in bounds if not math.isinf(b)]
            return (bound if not math.isinf(bound) else finite[-1]), total
    return None, total


class FleetAutoscaler:
    def __init__(
        self,
        controller: Controller,
        *,
        interval_s: float = 5.0,
        window_s: float = 60.0,
        capacity: Callable[[ModelSpec], float | None] = lambda spec: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.c = controller
        self.interval_s, self.window_s = interval_s, window_s
        self.capacity, self.clock = capacity, clock
        self.cores: dict[str, Autoscaler] = {}
        self.scrapes: deque[_Scrape] = deque()
        self.moves: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def models(self) -> list[ModelSpec]:
        return [m for m in self.c.cfg.models if isinstance(m.replicas, ReplicaRange)]

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except Exception:  # a scaling bug must not take the controller down
                    log.exception("autoscale tick failed; the fleet keeps its size")
                await asyncio.sleep(self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel the moves under way and close the gateway session."""
        for task in self.moves.values():
            task.cancel()
        for task in self.moves.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def tick(self) -> None:
        models = self.models()
        if not models:
            return
        now = self.clock()
        scrape = await self._scrape(now)
        first = self.scrapes[0] if self.scrapes else None
        if scrape is None or first is None or scrape is first:
            return  # no window yet, or the gateway did not answer: no basis to decide on
        for spec in models:
            if spec.name in self.moves and not self.moves[spec.name].done():
                continue
            obs = await self.observe(spec, now, scrape, first)
            core = self.cores.setdefault(spec.name, Autoscaler(targets(spec)))
            core.t = targets(spec)  # `apply` may have changed them
            decision = core.decide(obs)
            self._record(spec.name, decision, obs)
            if decision.changed:
                move = self._scale(spec, decision.current, decision.desired)
                self.moves[spec.name] = asyncio.ensure_future(move)

    async def _scrape(self, now: float) -> _Scrape | None:
        headers = {}
        token = self.c.cfg.gateway.metrics_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        text = await self._get(self.c.state.gateway_url + "/metrics", headers)
        if text is None:
            return None
        try:
            scrape = parse_gateway(text, now)
        except ValueError:
            return None
        self.scrapes.append(scrape)
        while len(self.scrapes) > 1 and self.scrapes[1].at <= now - self.window_s:
            self.scrapes.popleft()
        return scrape

    async def _get(self, url: str, headers: dict[str, str]) -> str | None:
        """The gateway's /metrics (with its token; the controller's probe sends none)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(url, headers=headers) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError):
            return None

    async def observe(
        self, spec: ModelSpec, now: float, scrape: _Scrape, first: _Scrape
    ) -> Observation:
        """The model's Observation over the window from `first` to `scrape`."""
        mine = [r for r in self.c.replicas_of(spec.name) if not r.draining]
        ready = [r for r in mine if r.state is ReplicaState.READY]
        metrics = get_adapter(spec.engine).load_metrics
        texts = await asyncio.gather(*(self.c.probe_text(r.url + "/metrics") for r in ready))
        loads = [parse_load(t, metrics=metrics) for t in texts if t is not None]
        engines = [x for x in loads if x is not None]
        ttft, started = p90(first.ttft.get(spec.name), scrape.ttft.get(spec.name))
        itl, _ = p90(first.itl.get(spec.name), scrape.itl.get(spec.name))
        rate = started / max(scrape.at - first.at, 1e-9)
        queued = sum(e.waiting for e in engines) + scrape.queue
        return Observation(
            now=now,
            ready=len(ready),
            starting=len(mine) - len(ready),
            arrival_rate=rate,
            ttft_p90_s=ttft,
            itl_p90_s=itl,
            queued=queued,
            running=sum(e.running for e in engines),
            kv_usage=max((e.kv_usage for e in engines), default=0.0),
            capacity_rps=self.capacity(spec),
        )

    def _record(self, model: str, d: Decision, obs: Observation) -> None:
        route = next((m for m in self.c.state.models if m.name == model), None)
        changed = route is not None and (route.desired, route.reason) != (d.desired, d.reason)
        if route is not None:
            route.desired, route.reason = d.desired, d.reason
        if d.changed or changed:
            log.info("autoscale %s: %d -> %d: %s; inputs %s", model, d.current, d.desired,
                     d.reason, obs)  # fmt: skip
            self.c.publish()

    def _at_now(self, m: ModelSpec, name: str, desired: int) -> ModelSpec:
        """A model at the count it runs (the scaled one at `desired`), for the launcher's
        plans: devices and ports are handed out in that order."""
        if m.name == name:
            return m.model_copy(update={"replicas": desired})
        if not isinstance(m.replicas, ReplicaRange):
            return m
        running = len([r for r in self.c.replicas_of(m.name) if not r.draining])
        return m.model_copy(update={"replicas": max(running, 1)})

    async def _scale(self, spec: ModelSpec, current: int, desired: int) -> None:
        step = lambda line: log.info("autoscale %s", line)  # noqa: E731
        grace = self.c.cfg.gateway.drain_grace_s
        if desired < current:
            mine = [r for r in self.c.replicas_of(spec.name) if not r.draining]
            await asyncio.gather(*(retire(self.c, r, grace, step) for r in mine[desired:]))
            return
        cfg = self.c.cfg.model_copy(update={"models": [self._at_now(m, spec.name, desired)
                                                        for m in self.c.cfg.models]})  # fmt: skip
        paths = await asyncio.to_thread(model_paths, cfg)
        plans = await asyncio.to_thread(self.c.launcher.plans, cfg, paths)
        new = [p for p in plans if p.model.name == spec.name][current:desired]
        try:
            await start(self.c, spec.name, new, 0, self.c.policy.startup_timeout_s, grace, step)
        except ApplyFailed as exc:
            log.warning("autoscale %s: %s", spec.name, exc)
