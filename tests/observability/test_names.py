"""The metric names the dashboards read are the ones deepfleet and vLLM export."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from deepfleet.gateway.metrics import GatewayMetrics
from deepfleet.observability import names
from deepfleet.observability.dashboards import DASHBOARDS
from deepfleet.observability.rules import alerting_rules, recording_rules
from deepfleet.observability.settings import MonitoringSettings, Slo
from deepfleet.routing.metrics import RoutingMetrics
from tests.observability.promql import base_name, metric_names


def _declared(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


def test_gateway_names_are_exported() -> None:
    assert set(names.GATEWAY) <= _declared(GatewayMetrics().registry)


def test_pending_names_match_the_kv_routing_layer() -> None:
    assert set(names.PENDING) <= _declared(RoutingMetrics().registry)


def test_vllm_names_are_in_the_installed_vllm() -> None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vLLM is not installed")
    source = (Path(spec.submodule_search_locations[0]) / "v1/metrics/loggers.py").read_text()
    declared = set(re.findall(r'name="(vllm:[a-z0-9_]+)"', source))
    for name in names.VLLM:
        assert name.removesuffix("_total") in declared, name


def test_every_query_reads_only_named_metrics() -> None:
    settings = MonitoringSettings(gateway_url="http://g:1", slos={"m": Slo()})
    exprs = [q.expr for d in DASHBOARDS for p in d.panels for q in p.queries]
    exprs += [r["expr"] for r in (*recording_rules(settings), *alerting_rules(settings))]
    unknown = {(m, e) for e in exprs for m in metric_names(e) if base_name(m) not in names.ALL}
    assert not unknown


@pytest.mark.parametrize(
    ("expr", "found"),
    [
        ('sum by (le, model) (rate(deepfleet_ttft_bucket{model=~"$model"}[$__rate_interval]))',
         {"deepfleet_ttft_bucket"}),
        ("(a_total or on () vector(0)) / b", {"a_total", "b"}),
        ('histogram_quantile(0.99, x) > on (model) deepfleet:slo{le="1e3"}',
         {"x", "deepfleet:slo"}),
    ],
)  # fmt: skip
def test_metric_name_extraction(expr: str, found: set[str]) -> None:
    assert metric_names(expr) == found
