"""The scalers the autoscaling simulation compares, behind one small protocol.

- `SloScaler`: deepfleet's decision core (deepfleet.autoscale), the code the controller runs.
- `QueueScaler`: a queue-length threshold rule as production-stack configures KEDA:
  a Prometheus trigger on `sum(vllm:num_requests_waiting)` with a threshold per replica,
  which the Kubernetes HPA turns into `desired = ceil(waiting / threshold)` (AverageValue),
  with its defaults: a 10% tolerance, scale-up at most +100% or +4 replicas per step, and a
  300 s scale-down stabilization window (the highest recommendation of the last 300 s).
- `FixedScaler`: a fleet that never changes size.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

from deepfleet.autoscale.decide import Autoscaler, Observation, Targets

HPA_TOLERANCE = 0.1
HPA_STABILIZATION_S = 300.0


class Scaler(Protocol):
    name: str

    def decide(self, obs: Observation) -> tuple[int, str]:
        """Desired replicas and why."""
        ...


class SloScaler:
    name = "deepfleet-slo"

    def __init__(self, targets: Targets) -> None:
        self.core = Autoscaler(targets)

    def decide(self, obs: Observation) -> tuple[int, str]:
        d = self.core.decide(obs)
        return d.desired, d.reason


class QueueScaler:
    name = "queue-threshold (KEDA/HPA)"

    def __init__(self, threshold: float, min_replicas: int, max_replicas: int) -> None:
        self.threshold = threshold
        self.min, self.max = min_replicas, max_replicas
        self._recent: deque[tuple[float, int]] = deque()

    def decide(self, obs: Observation) -> tuple[int, str]:
        current = obs.ready + obs.starting
        if current and abs(obs.queued / (current * self.threshold) - 1) <= HPA_TOLERANCE:
            raw = current
        else:
            raw = math.ceil(obs.queued / self.threshold)
        raw = max(self.min, min(self.max, raw, max(2 * current, current + 4)))
        if not self._recent:  # the HPA starts from the replicas it finds
            self._recent.append((obs.now, current))
        self._recent.append((obs.now, raw))
        while self._recent[0][0] < obs.now - HPA_STABILIZATION_S:
            self._recent.popleft()
        desired = raw if raw >= current else min(current, max(r for _, r in self._recent))
        return desired, f"waiting {obs.queued} / threshold {self.threshold:g} -> {raw}"


class FixedScaler:
    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.name = f"fixed at {replicas}"

    def decide(self, obs: Observation) -> tuple[int, str]:
        return self.replicas, "fixed"
