"""The autoscaling decision for one model: observed load and latencies in, desired replicas out.

Pure: `Autoscaler.decide(Observation)` reads numbers and its own memory (when it last scaled,
when the model was last busy, recent arrival rates) and returns a Decision with a reason a
person can read. The controller and the simulator call the same code.

Each tick, in this order:

1. Predictive sizing. `need = ceil(forecast / (capacity x utilization))`: the replicas the
   arrival rate needs with every replica at `utilization` of what it serves within the
   targets (`capacity`, from the planner's or simulator's model of one replica). `forecast`
   is the rate `lead_s` ahead (a replica's start time) on the recent trend, rising only: a
   replica asked for now serves only after it has started.
2. Reactive pressure. A measured TTFT p90 or ITL p90 above its target, more than
   `queue_per_replica` requests waiting per ready replica, or KV cache usage above
   KV_PRESSURE means the capacity model is wrong for this load: add replicas in proportion to
   the worst excess (HPA's ratio, at most doubling), unless replicas are already starting
   (they are the answer to the same pressure).
3. Up: to the larger of the two, at once from zero, else at most every `up_cooldown_s`.
4. Down, only without pressure and `down_cooldown_s` after the last scaling either way, and
   with hysteresis: to `ceil(rate / (capacity x utilization x (1 - hysteresis)))`, so a rate
   that wobbles around a boundary does not flap. Without a capacity model: one replica less
   when every signal is below half its target, every ready replica's load was read, and,
   when a replica's `slots` are known, the requests running and waiting fit half the slots
   of one replica fewer (latencies stay low while every slot is taken; removing a replica
   would queue).
5. Scale to zero (`min_replicas` 0): no arrival, nothing queued, running, starting or unread for
   `idle_timeout_s` (a replica still loading is not idle time: the fleet's first replica,
   or one a request called, counts from when it is ready); until then one replica stays.

Everything is clamped to [min_replicas, max_replicas].
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

KV_PRESSURE = 0.95
"""KV cache usage (0-1) above which a replica is full: new requests wait for blocks."""
MAX_UP_RATIO = 2.0
"""Reactive scale-up at most doubles the ready replicas per decision."""


@dataclass(frozen=True)
class Targets:
    """One model's autoscaling settings (fleet.yaml `replicas` and `autoscale`)."""

    min_replicas: int = 1
    max_replicas: int = 1
    ttft_p90_s: float = 2.0
    itl_p90_s: float = 0.05
    queue_per_replica: float = 4.0
    up_cooldown_s: float = 30.0
    down_cooldown_s: float = 300.0
    idle_timeout_s: float = 600.0
    utilization: float = 0.75
    """Share of a replica's capacity predictive sizing plans for: the headroom for bursts."""
    hysteresis: float = 0.15
    lead_s: float = 120.0
    """How far ahead the rising rate is extrapolated: about one replica's start time."""


@dataclass(frozen=True)
class Observation:
    """What the controller measured for one model over its window (rates per second)."""

    now: float
    ready: int
    starting: int = 0
    arrival_rate: float = 0.0
    ttft_p90_s: float | None = None
    itl_p90_s: float | None = None
    queued: int = 0
    """Requests waiting: the gateway's queue plus the engines' waiting."""
    running: int = 0
    kv_usage: float = 0.0
    """The fullest ready replica's KV cache usage, 0-1."""
    capacity_rps: float | None = None
    """Requests/s one replica serves within the targets; None: no model, reactive only."""
    slots: int | None = None
    """Sequences one replica runs at once (its max_num_seqs), when known."""
    unread: int = 0
    """Ready replicas whose load (/metrics) could not be read this tick (a loaded engine
    answering late): what they run is unknown, so the model is neither calm nor idle."""


@dataclass(frozen=True)
class Decision:
    desired: int
    current: int
    reason: str
    need: int | None = None
    """Replicas the predictive sizing asked for (None without a capacity model)."""

    @property
    def changed(self) -> bool:
        return self.desired != self.current


class Autoscaler:
    """The decision core for one model; keeps only when it scaled and recent rates."""

    def __init__(self, targets: Targets) -> None:
        self.t = targets
        self.last_up = -math.inf
        self.last_down = -math.inf
        self.last_busy = -math.inf
        self._first: float | None = None
        self._rates: deque[tuple[float, float]] = deque()

    def decide(self, obs: Observation) -> Decision:
        t = self.t
        if self._first is None:
            self._first = obs.now  # a fresh core does not scale down before its cool-down
        current = obs.ready + obs.starting
        busy = obs.arrival_rate > 0 or obs.queued > 0 or obs.running > 0 or obs.unread > 0
        if busy or obs.starting or self.last_busy == -math.inf:
            self.last_busy = obs.now
        forecast = self._forecast(obs.now, obs.arrival_rate)
        need = self._need(forecast, obs.capacity_rps, t.utilization)
        bounds = self._bounds(current, busy)
        if bounds is not None:
            return self._done(obs, bounds[0], current, bounds[1], need)
        pressure, ratio = self._pressure(obs)
        up, why = current, ""
        if need is not None and need > current:
            up = need
            why = (
                f"rate {obs.arrival_rate:.2f} req/s (forecast {forecast:.2f}) needs {need} "
                f"at {t.utilization:.0%} of {obs.capacity_rps:.2f} req/s per replica"
            )
        if pressure and obs.starting == 0:
            step = max(1, math.ceil(obs.ready * (min(ratio, MAX_UP_RATIO) - 1)))
            if current + step > up:
                up, why = current + step, "; ".join(pressure)
        up = min(up, t.max_replicas)
        if up > current:
            wait = self.t.up_cooldown_s - (obs.now - self.last_up)
            if wait > 0 and current > 0:
                return Decision(current, current, f"hold: up to {up} in {wait:.0f}s ({why})", need)
            return self._done(obs, up, current, f"up: {why}", need)
        if pressure:
            return Decision(current, current, f"hold: {'; '.join(pressure)}", need)
        return self._down(obs, current, need)

    # -- the parts ------------------------------------------------------------------------
    def _bounds(self, current: int, busy: bool) -> tuple[int, str] | None:
        """A count outside [min, max], or traffic for a model at zero: fixed at once."""
        t = self.t
        if current < t.min_replicas:
            return t.min_replicas, f"up: below min_replicas {t.min_replicas}"
        if current > t.max_replicas:
            return t.max_replicas, f"down: above max_replicas {t.max_replicas}"
        if current == 0 and busy:
            return 1, "up: a request for a model at zero replicas"
        return None

    def _pressure(self, obs: Observation) -> tuple[list[str], float]:
        """The signals above their targets, and the worst value / target ratio."""
        t = self.t
        signals: list[tuple[str, float, float, str]] = []
        if obs.ttft_p90_s is not None:
            signals.append(("TTFT p90", obs.ttft_p90_s, t.ttft_p90_s, "s"))
        if obs.itl_p90_s is not None:
            signals.append(("ITL p90", obs.itl_p90_s * 1e3, t.itl_p90_s * 1e3, "ms"))
        if obs.ready:
            signals.append(("queue", obs.queued / obs.ready, t.queue_per_replica, "/replica"))
        if obs.kv_usage > KV_PRESSURE:
            signals.append(("KV usage", obs.kv_usage, KV_PRESSURE, ""))
        over = [(n, v, g, u) for n, v, g, u in signals if g > 0 and v > g]
        lines = [f"{n} {v:.3g}{u} > {g:.3g}{u}" for n, v, g, u in over]
        return lines, max((v / g for _, v, g, _ in over), default=1.0)

    def _calm(self, obs: Observation) -> bool:
        """Every latency and queue signal below half its target (with traffic, a latency
        not measured is not calm: requests arriving or running)."""
        t = self.t
        traffic = obs.arrival_rate > 0 or obs.running > 0
        if obs.unread:
            return False
        if traffic and (obs.ttft_p90_s is None or obs.itl_p90_s is None):
            return False
        return (
            (obs.ttft_p90_s is None or obs.ttft_p90_s < t.ttft_p90_s / 2)
            and (obs.itl_p90_s is None or obs.itl_p90_s < t.itl_p90_s / 2)
            and obs.queued <= max(obs.ready, 1) * t.queue_per_replica / 2
        )

    @staticmethod
    def _fits(obs: Observation, replicas: int) -> bool:
        """The requests running and waiting fit half the slots of `replicas` (true when the
        slots are not known)."""
        if not obs.slots:
            return True
        return obs.running + obs.queued <= replicas * obs.slots / 2

    def _down(self, obs: Observation, current: int, need: int | None) -> Decision:
        t = self.t
        idle = obs.now - self.last_busy
        if t.min_replicas == 0 and current > 0 and idle >= t.idle_timeout_s:
            return self._done(obs, 0, current, f"down: idle for {idle:.0f}s", need)
        floor = max(t.min_replicas, 1 if current > 0 else 0)
        if obs.capacity_rps:
            low = self._need(obs.arrival_rate, obs.capacity_rps, t.utilization * (1 - t.hysteresis))
            target = max(floor, low or 0)
            why = (
                f"rate {obs.arrival_rate:.2f} req/s fits {target} at "
                f"{t.utilization * (1 - t.hysteresis):.0%} of {obs.capacity_rps:.2f} req/s"
            )
        else:
            target = current - 1 if self._calm(obs) and self._fits(obs, current - 1) else current
            target = max(floor, target)
            why = "every signal below half its target"
        if target >= current or obs.starting:
            unread = f" ({obs.unread} replicas' load not read)" if obs.unread else ""
            return Decision(current, current, f"hold: {current} replicas{unread}", need)
        wait = t.down_cooldown_s - (obs.now - max(self.last_up, self.last_down, self._first or 0))
        if wait > 0:
            return Decision(current, current, f"hold: down to {target} in {wait:.0f}s", need)
        return self._done(obs, target, current, f"down: {why}", need)

    def _done(
        self, obs: Observation, desired: int, current: int, reason: str, need: int | None
    ) -> Decision:
        if desired > current:
            self.last_up = obs.now
        elif desired < current:
            self.last_down = obs.now
        return Decision(desired, current, reason, need)

    @staticmethod
    def _need(rate: float, capacity: float | None, utilization: float) -> int | None:
        if not capacity or capacity <= 0:
            return None
        return math.ceil(rate / (capacity * utilization) - 1e-9)

    def _forecast(self, now: float, rate: float) -> float:
        """The rate `lead_s` ahead on the least-squares trend of the last `lead_s` of rates,
        rising only, at most double the current rate."""
        self._rates.append((now, rate))
        while self._rates and self._rates[0][0] < now - self.t.lead_s:
            self._rates.popleft()
        n = len(self._rates)
        if n < 3:
            return rate
        mt = sum(x for x, _ in self._rates) / n
        mr = sum(y for _, y in self._rates) / n
        var = sum((x - mt) ** 2 for x, _ in self._rates)
        if var <= 0:
            return rate
        slope = sum((x - mt) * (y - mr) for x, y in self._rates) / var
        return min(2 * rate, rate + max(0.0, slope) * self.t.lead_s)
