"""The controller's autoscaler: replicas follow the load for models with `replicas: {min, max}`.

Every `interval_s`: read the gateway's /metrics (its TTFT and ITL histograms per model, the
admission queue) and each ready replica's /metrics (running, waiting, KV usage), turn them
into an Observation over the last `window_s` (histogram and counter deltas), ask the model's
decision core (deepfleet.autoscale) and, when it wants another count, scale:

- up: plan the model at the new count and start the plans beyond the current replicas
  (rollout.start: ready before they count; a replica that cannot start is stopped again);
- down: drain the newest replicas and stop them once idle (rollout.retire: the gateway routes
  nothing new to a draining replica, its streams finish within the gateway's drain grace).

Each decision is logged with its inputs (also to logs/autoscaler.log in the state folder) and
recorded in the state file's ModelRoute (`desired`, `reason`), which `deepfleet status` shows.
One scaling move per model at a time; the model's decisions pause while it runs. Without a
window of gateway scrapes (at start, or when the gateway does not answer) nothing is decided:
no traffic seen is not no traffic.

Scale to zero (`replicas.min: 0`): the route's `cold_wait_s` tells the gateway to keep the
model listed (cold) and hold its requests that long: 2 x the model's last measured start
(a replica's `ready_at - started_at`) plus one tick, or the supervisor's startup timeout
before one was measured; the gateway waits the larger of that and `queue_timeout_s`. A held
request shows in the gateway's `deepfleet_waiting_for_replica{model}`; while a model is at
zero the loop reads that gauge every `cold_poll_s` and, when a request waits, decides at
once (a waiting request at zero replicas is a bound: 0 -> 1 without cool-down or window).

In Ray mode a new replica is a placement group (fleet.ray.launcher); while the cluster lacks
its devices the group waits (and tells a Ray autoscaler, e.g. KubeRay's, what to add) and the
replica's detail says `waiting for 1 x {GPU: 1} STRICT_PACK`. After a tick of that the model's
reason becomes `pending: not enough GPUs (...)`, which `deepfleet status` shows; the move
gives up after the supervisor's startup timeout, and the next decision asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable

import aiohttp

from deepfleet.autoscale import Autoscaler, Decision, Observation, Targets
from deepfleet.autoscale.signals import Scrape, p90, parse_gateway
from deepfleet.config.autoscale import AutoscaleSpec, ReplicaRange
from deepfleet.config.schema import ModelSpec
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.load import parse_load
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.files import log_file, metrics_token
from deepfleet.fleet.model_paths import model_paths
from deepfleet.fleet.replica_capacity import PlannerCapacity
from deepfleet.fleet.rollout import ApplyFailed, retire, start
from deepfleet.fleet.state import ReplicaState
from deepfleet.net import is_loopback

log = logging.getLogger(__name__)
Capacity = Callable[[ModelSpec, ReplicaPlan | None, float, float], float | None]
"""(model, one of its replica plans, mean prompt tokens, mean output tokens) -> requests/s
one replica serves within the targets; None: no model (scale reactively)."""
PLACING = re.compile(r"^waiting for .*?\{(\w+):")
"""A Ray replica's detail while its placement group waits: the resource it lacks."""
COLD_MARGIN = 2.0
"""A cold model's requests wait this many times its last measured start (plus one tick)."""


def targets(spec: ModelSpec) -> Targets:
    """The decision core's settings from one model's fleet.yaml entry.

    `min: 0` passes through: the gateway holds a cold model's requests and reports them in
    `deepfleet_waiting_for_replica{model}`, from which a model at zero starts again.
    """
    r = spec.replicas
    assert isinstance(r, ReplicaRange)
    a = spec.autoscale or AutoscaleSpec()
    return Targets(
        min_replicas=r.min, max_replicas=r.max, ttft_p90_s=a.ttft_p90_ms / 1e3,
        itl_p90_s=a.itl_p90_ms / 1e3, queue_per_replica=a.queue_per_replica,
        up_cooldown_s=a.up_cooldown_s, down_cooldown_s=a.down_cooldown_s,
        idle_timeout_s=a.idle_timeout_s, utilization=a.utilization,
    )  # fmt: skip


class FleetAutoscaler:
    def __init__(
        self,
        controller: Controller,
        *,
        interval_s: float = 5.0,
        window_s: float = 60.0,
        cold_poll_s: float = 1.0,
        capacity: Capacity | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.c = controller
        self.interval_s, self.window_s, self.cold_poll_s = interval_s, window_s, cold_poll_s
        self.since: dict[str, float] = {}
        """When each model's last move ended, plus one tick: its latencies are read from there
        (those measured at another size, e.g. a cold request's wait for its replica, which
        lands at its first token, are not this size's). Arrivals keep the whole window: a
        few seconds of long streams may see no new request."""
        self.placing: dict[str, float] = {}
        """Replicas whose placement group waits for resources, since when."""
        self.start_s: dict[str, float] = {}
        """Each model's last measured start (a replica's ready_at - started_at), seconds."""
        self._capacity = capacity
        self.clock = clock
        self.cores: dict[str, Autoscaler] = {}
        self.scrapes: deque[Scrape] = deque()
        self.moves: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._handler: logging.Handler | None = None

    @property
    def capacity(self) -> Capacity:
        """The given capacity, or the planner's for the controller's cluster (made at first
        use: the controller's config is read then)."""
        if self._capacity is None:
            self._capacity = PlannerCapacity(self.c.cfg)
        return self._capacity

    def models(self) -> list[ModelSpec]:
        return [m for m in self.c.cfg.models if isinstance(m.replicas, ReplicaRange)]

    async def run(self) -> None:
        """Tick until cancelled."""
        try:
            while True:
                try:
                    await self.tick()
                except Exception:  # a scaling bug must not take the controller down
                    log.exception("autoscale tick failed; the fleet keeps its size")
                await self._pause()
        finally:
            await self.close()

    def _log_to_file(self) -> None:
        """Decisions and moves go to logs/autoscaler.log in the state folder too (once there is
        a model to scale)."""
        if self._handler is not None:
            return
        self._handler = logging.FileHandler(log_file(self.c.state_dir, "autoscaler"))
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self._handler.setLevel(logging.INFO)
        log.addHandler(self._handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)

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
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    async def _pause(self) -> None:
        """Wait `interval_s`; while a model is at zero replicas, read the gateway's waiting
        gauge every `cold_poll_s` and return as soon as a request waits for one."""
        end = self.clock() + self.interval_s
        while (left := end - self.clock()) > 0:
            await asyncio.sleep(min(left, self.cold_poll_s))
            cold = [m.name for m in self.models() if self._cold(m.name)]
            if not cold:
                continue
            scrape = await self._scrape(self.clock())
            if scrape is not None and any(scrape.waiting.get(m, 0) > 0 for m in cold):
                return

    def _cold(self, model: str) -> bool:
        """No replica (ready, starting or restarting) and no move under way."""
        if model in self.moves and not self.moves[model].done():
            return False
        return not any(not r.draining for r in self.c.replicas_of(model))

    async def tick(self) -> None:
        models = self.models()
        if not models:
            return
        self._log_to_file()
        self._cold_waits(models)
        now = self.clock()
        scrape = await self._scrape(now)
        if scrape is None:
            return  # the gateway did not answer: no basis to decide on
        for spec in models:
            if spec.name in self.moves and not self.moves[spec.name].done():
                self._pending(spec.name, now)
                continue
            since = self.since.get(spec.name, -math.inf)
            recent = next((s for s in self.scrapes if s.at >= since), scrape)
            called = self._cold(spec.name) and scrape.waiting.get(spec.name, 0) > 0
            if scrape is self.scrapes[0] and not called:
                continue  # no window yet; a request held for a model at zero needs none
            obs = await self.observe(spec, now, scrape, self.scrapes[0], recent)
            core = self.cores.setdefault(spec.name, Autoscaler(targets(spec)))
            core.t = targets(spec)  # `apply` may have changed them
            decision = core.decide(obs)
            self._record(spec.name, decision, obs)
            if decision.changed:
                move = self._scale(spec, decision.current, decision.desired)
                self.moves[spec.name] = asyncio.ensure_future(move)

    async def _scrape(self, now: float) -> Scrape | None:
        headers = {}
        g = self.c.cfg.gateway
        # Off loopback the gateway wants a token: the configured one, else its generated one.
        generated = None if is_loopback(g.host) else metrics_token(self.c.state_dir)
        token = g.metrics_token or generated
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
        self, spec: ModelSpec, now: float, scrape: Scrape, first: Scrape, recent: Scrape
    ) -> Observation:
        """The model's Observation: arrivals and mix over the window from `first` to
        `scrape`, latencies from `recent` (one tick after the last move) to `scrape`."""
        mine = [r for r in self.c.replicas_of(spec.name) if not r.draining]
        ready = [r for r in mine if r.state is ReplicaState.READY]
        metrics = get_adapter(spec.engine).load_metrics
        texts = await asyncio.gather(*(self.c.probe_text(r.url + "/metrics") for r in ready))
        loads = [parse_load(t, metrics=metrics) for t in texts if t is not None]
        engines = [x for x in loads if x is not None]
        ttft, _ = p90(recent.ttft.get(spec.name), scrape.ttft.get(spec.name))
        itl, _ = p90(recent.itl.get(spec.name), scrape.itl.get(spec.name))
        _, started = p90(first.ttft.get(spec.name), scrape.ttft.get(spec.name))
        rate = started / max(scrape.at - first.at, 1e-9)
        mix = [
            (now.get(spec.name, 0.0) - then.get(spec.name, 0.0)) / started if started else 0.0
            for now, then in ((scrape.prompt, first.prompt), (scrape.output, first.output))
        ]
        plan = next(
            (self.c.plans[r.replica_id] for r in mine if r.replica_id in self.c.plans), None
        )
        queued = sum(e.waiting for e in engines) + scrape.queue + scrape.waiting.get(spec.name, 0)
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
            capacity_rps=self.capacity(spec, plan, mix[0], mix[1]) if started else None,
            slots=_slots(plan),
            unread=len(ready) - len(engines),
        )

    def _pending(self, model: str, now: float) -> None:
        """While a scale-up's replicas wait for a placement (Ray: the cluster is full) for
        more than a tick, the model's reason says so."""
        waiting = []
        for r in self.c.replicas_of(model):
            m = PLACING.match(r.detail or "") if r.state is ReplicaState.STARTING else None
            if m is None:
                self.placing.pop(r.replica_id, None)
                continue
            since = self.placing.setdefault(r.replica_id, now)
            if now - since >= self.interval_s:
                waiting.append((r, m.group(1)))
        route = next((m for m in self.c.state.models if m.name == model), None)
        if not waiting or route is None:
            return
        ids = ", ".join(r.replica_id for r, _ in waiting)
        reason = f"pending: not enough {waiting[0][1]}s ({ids} {waiting[0][0].detail})"
        if route.reason != reason:
            log.info("autoscale %s: %s", model, reason)
            route.reason = reason
            self.c.publish()

    def _cold_waits(self, models: list[ModelSpec]) -> None:
        """Measure each model's start and put a `min: 0` model's cold wait in its route."""
        changed = False
        for spec in models:
            done = [r for r in self.c.replicas_of(spec.name) if r.ready_at and r.started_at]
            if done:
                last = max(done, key=lambda r: r.ready_at or 0.0)
                self.start_s[spec.name] = (last.ready_at or 0.0) - (last.started_at or 0.0)
            route = next((m for m in self.c.state.models if m.name == spec.name), None)
            if route is None or not isinstance(spec.replicas, ReplicaRange):
                continue
            wait = None
            if spec.replicas.min == 0:
                measured = self.start_s.get(spec.name)
                wait = (
                    self.c.policy.startup_timeout_s
                    if measured is None
                    else round(COLD_MARGIN * measured + self.interval_s, 1)
                )
            if route.cold_wait_s != wait:
                route.cold_wait_s, changed = wait, True
        if changed:
            self.c.publish()

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
        plans: devices, ports and CPU cores are handed out in that order."""
        if m.name == name:
            return at_count(m, desired)
        running = [r for r in self.c.replicas_of(m.name) if not r.draining]
        return at_count(m, max(len(running), 1))

    async def _scale(self, spec: ModelSpec, current: int, desired: int) -> None:
        try:
            await self._move(spec, current, desired)
        finally:
            self.since[spec.name] = self.clock() + self.interval_s

    async def _move(self, spec: ModelSpec, current: int, desired: int) -> None:
        def step(line: str) -> None:  # e.g. "draining X": the gateway must see it now
            log.info("autoscale %s", line)
            self.c.publish()

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


def at_count(m: ModelSpec, count: int) -> ModelSpec:
    """An autoscaled model planned at `count` replicas; it stays a range with its max, which
    CPU replicas' cores are split by (fleet.cpu_share). Other models are as configured."""
    if not isinstance(m.replicas, ReplicaRange):
        return m
    return m.model_copy(
        update={"replicas": ReplicaRange(min=count, max=max(count, m.replicas.max))}
    )


def _slots(plan: ReplicaPlan | None) -> int | None:
    """A replica's max_num_seqs: planned, or set in the model's engine_args; None: unknown."""
    if plan is None:
        return None
    value = plan.max_num_seqs or plan.model.engine_args.get("max_num_seqs")
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None
