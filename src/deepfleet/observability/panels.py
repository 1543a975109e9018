"""The small vocabulary dashboards are written in: a query, a panel, a dashboard.

Queries use Grafana's variables: `$model` and `$replica` (multi-value, "All" is `.*`) and
`$__rate_interval`. `grafana.py` turns these into dashboard JSON; tests read the queries back
from that JSON and run them against a real Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RATE = "$__rate_interval"
MODEL = 'model=~"$model"'
REPLICA = 'replica=~"$replica"'
PanelKind = Literal["timeseries", "stat"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    slo: bool = False
    """The objective itself: drawn as a dashed red line."""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: PanelKind = "timeseries"
    threshold: float | None = None
    """Red from this value up: a red line on a timeseries, a red stat."""
    healthy_from: float | None = None
    """Red below this value, green from it (counts of ready things)."""


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = ("model",)


def rate(metric: str, matchers: str = MODEL, by: str = "model") -> str:
    return f"sum by ({by}) (rate({metric}{{{matchers}}}[{RATE}]))"


def quantile(q: float, histogram: str, matchers: str = MODEL, by: str = "model") -> str:
    return (
        f"histogram_quantile({q:g}, sum by (le, {by}) "
        f"(rate({histogram}_bucket{{{matchers}}}[{RATE}])))"
    )


def ratio(part: str, whole: str, matchers: str = MODEL, by: str = "model") -> str:
    return f"{rate(part, matchers, by)} / {rate(whole, matchers, by)}"


def zero_when_absent(expr: str) -> str:
    """A counter that exists only after its first event (a prometheus-client labelled counter):
    show 0 instead of "No data" until then."""
    return f"({expr}) or on () vector(0)"


def p50_p99(
    histogram: str, label: str, matchers: str = MODEL, by: str = "model"
) -> tuple[Query, ...]:
    legend = "{{" + by + "}}"
    return (
        Query(quantile(0.5, histogram, matchers, by), f"{legend} {label} p50"),
        Query(quantile(0.99, histogram, matchers, by), f"{legend} {label} p99"),
    )
