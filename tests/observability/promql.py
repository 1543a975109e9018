"""Helpers for tests that read PromQL back out of the rendered dashboards."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from deepfleet.observability import names

# Grafana's variables as the tests substitute them ("All" for the multi-value ones).
VARIABLES = {"$__rate_interval": "2m", "$model": ".*", "$replica": ".*"}
_WORDS = """sum max min avg count rate increase deriv irate delta histogram_quantile
min_over_time max_over_time avg_over_time vector scalar abs clamp_min clamp_max or and unless
bool by without on ignoring group_left group_right offset le inf nan"""
PROMQL_WORDS = frozenset(_WORDS.split())


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def label(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref}]"


def substitute(expr: str) -> str:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (as stored: histograms through _bucket etc.)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', substitute(expr))
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    idents = re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", s)
    return {i for i in idents if i.lower() not in PROMQL_WORDS}


def dashboard_queries(folder: Path) -> list[PanelQuery]:
    out = []
    for path in sorted(folder.glob("*.json")):
        d = json.loads(path.read_text())
        for p in d["panels"]:
            for t in p["targets"]:
                out.append(PanelQuery(d["title"], p["title"], t["refId"], t["expr"]))
    return out


def pending_reads(expr: str) -> set[str]:
    """The pending (not yet exported) and GPU-only metrics an expression reads."""
    bases = {base_name(m) for m in metric_names(expr)}
    return bases & (set(names.PENDING) | set(names.DCGM))


HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def base_name(series: str) -> str:
    """The metric a stored series name belongs to: a histogram's `_bucket`/`_sum`/`_count`
    series map to the histogram's name; anything else is returned as is."""
    if series in names.ALL:
        return series
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series[: -len(suffix)] in names.ALL:
            return series[: -len(suffix)]
    return series
