"""A fleet of simulated replicas under a scaler, on virtual time (a SIMULATOR: no engine runs).

Every `dt` the trace's arrivals go to the ready replicas (power of two choices on running +
waiting; to a gateway queue while none is ready), each replica advances (sim/fluid.py), and
every `interval_s` the scaler sees what the controller would measure over the last
`window_s` and returns the replicas it wants:

- arrival rate: arrivals in the window / window;
- TTFT p90: of the first tokens produced in the window;
- ITL p90: of the ready replicas' current decode step (each replica weighted by its streams),
  what the gateway's inter-token histogram shows at that moment;
- queued: the gateway's queue plus the engines' waiting; running; the fullest KV cache.

A replica asked for starts `start_delay_s` later (loading weights); one asked away drains
(no new requests, stops once idle); a starting one asked away is cancelled; a draining one is
taken back before a new one is started. Replica-hours count every replica from the moment it
is asked for until it stops, starting and draining time included (its GPUs are held).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deepfleet.autoscale.decide import Observation
from deepfleet.sim.diurnal import DiurnalTrace
from deepfleet.sim.fluid import FluidEngine, Request
from deepfleet.sim.profile import LatencyProfile
from deepfleet.sim.scalers import Scaler


@dataclass(frozen=True)
class FleetSpec:
    profile: LatencyProfile
    max_seqs: int
    kv_tokens: int
    capacity_rps: float
    ttft_s: float = 1.0
    itl_s: float = 0.03
    start_delay_s: float = 120.0
    interval_s: float = 10.0
    window_s: float = 60.0
    dt: float = 0.1
    initial: int = 1
    seed: int = 0


@dataclass
class _Replica:
    engine: FluidEngine
    asked_at: float
    ready_at: float
    draining: bool = False
    stopped_at: float | None = None


@dataclass
class RunResult:
    scaler: str
    requests: int = 0
    met: int = 0
    ttft_met: int = 0
    itl_met: int = 0
    replica_s: float = 0.0
    peak_replicas: int = 0
    decisions: int = 0
    ttfts: list[float] = field(default_factory=list)
    itls: list[float] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    @property
    def attainment(self) -> float:
        return self.met / max(1, self.requests)

    @property
    def replica_hours(self) -> float:
        return self.replica_s / 3600


def _p90(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def _weighted_p90(pairs: list[tuple[float, int]]) -> float | None:
    total = sum(w for _, w in pairs)
    if not total:
        return None
    seen = 0
    for value, w in sorted(pairs):
        seen += w
        if seen >= 0.9 * total:
            return value
    return pairs[-1][0]


class FleetRun:
    """One scaler against one trace; `run()` returns the RunResult."""

    def __init__(self, trace: DiurnalTrace, spec: FleetSpec, scaler: Scaler) -> None:
        self.trace, self.spec, self.scaler = trace, spec, scaler
        self.rng = random.Random(spec.seed)
        self.replicas = [self._new(0.0, 0.0) for _ in range(spec.initial)]
        self.pending: deque[Request] = deque()
        self.arrived: deque[float] = deque()
        self.firsts: deque[tuple[float, float]] = deque()
        self.result = RunResult(scaler.name)

    def _new(self, now: float, delay: float) -> _Replica:
        s = self.spec
        engine = FluidEngine(s.profile, max_seqs=s.max_seqs, kv_tokens=s.kv_tokens)
        return _Replica(engine, now, now + delay)

    # -- the loop -------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> RunResult:
        s, res = self.spec, self.result
        arrivals = self.trace.arrivals()
        upcoming = next(arrivals, None)
        t, next_decision, next_sample = 0.0, s.interval_s, 0.0
        end = self.trace.duration_s
        while t < end or upcoming or self.pending or any(not r.engine.idle for r in self.live):
            ready = [r for r in self.live if r.ready_at <= t and not r.draining]
            while upcoming is not None and upcoming[0] < t + s.dt:
                self.arrived.append(upcoming[0])
                self._route(Request(*upcoming), ready)
                upcoming = next(arrivals, None)
            while self.pending and ready:
                self._route(self.pending.popleft(), ready)
            for r in self.live:
                if r.ready_at <= t:
                    r.engine.tick(t, s.dt, self._finished, self._started)
                if r.draining and r.engine.idle:
                    r.stopped_at = t
            res.replica_s += s.dt * len(self.live)
            res.peak_replicas = max(res.peak_replicas, len(self.live))
            if t >= next_decision and t < end:
                self._decide(t)
                next_decision += s.interval_s
            if t >= next_sample:
                self._sample(t)
                next_sample += 60.0
                if progress:
                    progress(t)
            t += s.dt
        return res

    @property
    def live(self) -> list[_Replica]:
        return [r for r in self.replicas if r.stopped_at is None]

    def _route(self, request: Request, ready: list[_Replica]) -> None:
        if not ready:
            self.pending.append(request)
            return
        a, b = self.rng.choice(ready), self.rng.choice(ready)
        (a if a.engine.load <= b.engine.load else b).engine.submit(request)

    def _started(self, r: Request) -> None:
        assert r.first is not None
        self.firsts.append((r.first, r.ttft))

    def _finished(self, r: Request) -> None:
        res = self.result
        ttft_ok, itl_ok = r.ttft <= self.spec.ttft_s, r.itl <= self.spec.itl_s
        res.requests += 1
        res.ttft_met += ttft_ok
        res.itl_met += itl_ok
        res.met += ttft_ok and itl_ok
        res.ttfts.append(r.ttft)
        res.itls.append(r.itl)

    # -- the scaler's view ----------------------------------------------------------------
    def observe(self, t: float) -> Observation:
        s = self.spec
        since = t - s.window_s
        while self.arrived and self.arrived[0] < since:
            self.arrived.popleft()
        while self.firsts and self.firsts[0][0] < since:
            self.firsts.popleft()
        live = self.live
        ready = [r for r in live if r.ready_at <= t and not r.draining]
        starting = sum(r.ready_at > t for r in live)
        engines = [r.engine for r in ready]
        return Observation(
            now=t,
            ready=len(ready),
            starting=starting,
            arrival_rate=len(self.arrived) / min(s.window_s, max(t, s.interval_s)),
            ttft_p90_s=_p90([x for when, x in self.firsts if when <= t]),
            itl_p90_s=_weighted_p90([(e.last_step, e.running) for e in engines if e.running]),
            queued=len(self.pending) + sum(len(e.waiting) for e in engines),
            running=sum(e.running for e in engines),
            kv_usage=max((e.kv_usage for e in engines), default=0.0),
            capacity_rps=s.capacity_rps,
        )

    def _decide(self, t: float) -> None:
        obs = self.observe(t)
        desired, reason = self.scaler.decide(obs)
        current = obs.ready + obs.starting
        if desired != current:
            self.result.decisions += 1
            self.result.log.append(f"{t:8.0f}s {current} -> {desired}: {reason}")
        self._apply(t, desired - current)

    def _apply(self, t: float, delta: int) -> None:
        live = self.live
        if delta > 0:
            for r in [r for r in live if r.draining][:delta]:
                r.draining = False
                delta -= 1
            self.replicas += [self._new(t, self.spec.start_delay_s) for _ in range(delta)]
        elif delta < 0:
            starting = sorted((r for r in live if r.ready_at > t), key=lambda r: -r.asked_at)
            for r in starting[:-delta]:
                r.stopped_at = t
                delta += 1
            ready = [r for r in live if r.ready_at <= t and not r.draining]
            for r in sorted(ready, key=lambda r: r.engine.load)[:-delta]:
                r.draining = True
        self.replicas = [r for r in self.replicas if r.stopped_at is None]

    def _sample(self, t: float) -> None:
        live = self.live
        self.result.timeline.append(
            {
                "t_s": round(t),
                "trace_rps": round(self.trace.rate(min(t, self.trace.duration_s - 1)), 2),
                "ready": sum(r.ready_at <= t and not r.draining for r in live),
                "starting": sum(r.ready_at > t for r in live),
                "draining": sum(r.draining for r in live),
            }
        )
