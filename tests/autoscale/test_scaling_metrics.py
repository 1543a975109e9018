"""Desired vs ready replicas per model and the last decision's reason, as Prometheus metrics
from the state file (/metrics/fleet), for the Grafana panel on the fleet overview."""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus
from deepfleet.observability import fleet_metrics
from deepfleet.observability.dashboards import OVERVIEW
from deepfleet.observability.grafana import dashboard_json


def replica(rid: str, model: str, state: ReplicaState, draining: bool = False) -> ReplicaStatus:
    return ReplicaStatus(rid, model, "vllm", "http://x", state=state, draining=draining)


def test_desired_ready_and_reason_per_model() -> None:
    state = FleetState(1, "http://g", [
        ModelRoute("auto", "round_robin", desired=3, reason="hold: down to 1 in 20s"),
        ModelRoute("cold", "round_robin", desired=0, reason="down: idle for 601s"),
        ModelRoute("fixed", "round_robin"),
    ])  # fmt: skip
    state.replicas = [
        replica("auto-0", "auto", ReplicaState.READY),
        replica("auto-1", "auto", ReplicaState.STARTING),
        replica("auto-2", "auto", ReplicaState.READY, draining=True),
        replica("fixed-0", "fixed", ReplicaState.READY),
        replica("fixed-1", "fixed", ReplicaState.READY),
    ]
    families = {f.name: f for f in text_string_to_metric_families(fleet_metrics.render(state))}

    def per_model(name: str) -> dict[str, float]:
        return {s.labels["model"]: s.value for s in families[name].samples}

    assert per_model("deepfleet_replicas_desired") == {"auto": 3, "cold": 0, "fixed": 2}
    assert per_model("deepfleet_replicas_ready") == {"auto": 1, "cold": 0, "fixed": 2}
    reasons = {s.labels["model"]: s.labels["reason"]
               for s in families["deepfleet_autoscale_decision"].samples}  # fmt: skip
    assert reasons == {
        "auto": "hold: down to 1",  # the countdown would make a series a tick
        "cold": "down: idle for 601s",
        "fixed": "fixed count (not autoscaled)",
    }


def test_the_overview_draws_desired_vs_ready_and_the_reason() -> None:
    panels = {p["title"]: p for p in json.loads(json.dumps(dashboard_json(OVERVIEW)))["panels"]}
    exprs = [t["expr"] for t in panels["Replicas: desired vs ready"]["targets"]]
    assert any("deepfleet_replicas_desired" in e for e in exprs)
    assert any("deepfleet_replicas_ready" in e for e in exprs)
    (decision,) = panels["Last scaling decision"]["targets"]
    assert "deepfleet_autoscale_decision" in decision["expr"]
    assert decision["legendFormat"] == "{{model}}: {{reason}}"
