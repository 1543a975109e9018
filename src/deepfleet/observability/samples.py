"""Prometheus text exposition parsed into plain samples, with the few operations `deepfleet
top` needs: sums over label matches, counter increases, and histogram quantiles computed the
way Prometheus's histogram_quantile does."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Samples:
    """Sample name -> [(labels, value)], as exposed (counters with `_total`, histograms as
    `_bucket`/`_sum`/`_count`)."""

    series: dict[str, list[tuple[dict[str, str], float]]]

    @classmethod
    def parse(cls, text: str) -> Samples:
        series: defaultdict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                series[s.name].append((dict(s.labels), float(s.value)))
        return cls(dict(series))

    def _matching(
        self, name: str, match: Labels, where: Callable[[Labels], bool] | None = None
    ) -> list[tuple[dict[str, str], float]]:
        return [
            (labels, v)
            for labels, v in self.series.get(name, [])
            if all(labels.get(k) == want for k, want in match.items())
            and (where is None or where(labels))
        ]

    def total(
        self,
        name: str,
        match: Labels | None = None,
        where: Callable[[Labels], bool] | None = None,
    ) -> float | None:
        """Sum of every series of `name` whose labels include `match` (and pass `where`);
        None if there is none."""
        found = self._matching(name, match or {}, where)
        return sum(v for _, v in found) if found else None

    def buckets(self, histogram: str, match: Labels | None = None) -> dict[float, float]:
        """Cumulative bucket counts by upper bound, summed over matching series."""
        out: defaultdict[float, float] = defaultdict(float)
        for labels, v in self._matching(f"{histogram}_bucket", match or {}):
            out[float(labels["le"])] += v
        return dict(out)


def increase(new: float | None, old: float | None) -> float | None:
    """A counter's increase between two reads; a drop means it was reset (a restart)."""
    if new is None:
        return None
    if old is None or new < old:
        return new
    return new - old


def bucket_increase(new: dict[float, float], old: dict[float, float]) -> dict[float, float]:
    if any(new.get(le, 0.0) < count for le, count in old.items()):
        return dict(new)  # reset
    return {le: count - old.get(le, 0.0) for le, count in new.items()}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets: linear inside the bucket that
    holds the rank; the +Inf bucket answers with the largest finite bound. None without
    observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower
