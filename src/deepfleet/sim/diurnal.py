"""A diurnal request trace with bursts, for the autoscaling simulation (a SIMULATOR input).

The rate follows one day's shape over `hours` of virtual time: a trough at the start and the
end, the peak in the middle (`trough + (peak - trough) x (1 - cos(2 pi t / T)) / 2`), with
`bursts` short surges that multiply it by `burst_factor` for `burst_s` each, at random times.
Arrivals are a non-homogeneous Poisson process (thinning); each request draws its input and
output length from `classes` (share, input tokens, output tokens). Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

# Reasoning answers of the R1 distills run long; the mix keeps max_model_len 8192.
REASONING_MIX = ((0.3, 256, 512), (0.5, 1024, 2048), (0.2, 2048, 4096))


@dataclass(frozen=True)
class DiurnalTrace:
    hours: float = 6.0
    peak_rps: float = 400.0
    trough_fraction: float = 0.15
    bursts: int = 6
    burst_factor: float = 1.4
    burst_s: float = 300.0
    seed: int = 0
    classes: tuple[tuple[float, int, int], ...] = REASONING_MIX
    _starts: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed + 1)
        span = self.duration_s - self.burst_s
        starts = sorted(rng.uniform(0, span) for _ in range(self.bursts))
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def duration_s(self) -> float:
        return self.hours * 3600

    @property
    def burst_starts(self) -> tuple[float, ...]:
        return self._starts

    def base_rate(self, t: float) -> float:
        trough = self.peak_rps * self.trough_fraction
        return (
            trough
            + (self.peak_rps - trough) * (1 - math.cos(2 * math.pi * t / self.duration_s)) / 2
        )

    def rate(self, t: float) -> float:
        burst = any(s <= t < s + self.burst_s for s in self._starts)
        return self.base_rate(t) * (self.burst_factor if burst else 1.0)

    @property
    def max_rate(self) -> float:
        return self.peak_rps * max(1.0, self.burst_factor)

    @property
    def mean_input(self) -> float:
        return sum(p * i for p, i, _ in self.classes) / sum(p for p, _, _ in self.classes)

    @property
    def mean_output(self) -> float:
        return sum(p * o for p, _, o in self.classes) / sum(p for p, _, _ in self.classes)

    def arrivals(self) -> Iterator[tuple[float, int, int]]:
        """(time, input tokens, output tokens) in time order."""
        rng = random.Random(self.seed)
        weights = [p for p, _, _ in self.classes]
        top = self.max_rate
        t = 0.0
        while True:
            t += rng.expovariate(top)
            if t >= self.duration_s:
                return
            if rng.random() * top <= self.rate(t):
                _, n_in, n_out = rng.choices(self.classes, weights)[0]
                yield t, n_in, n_out
