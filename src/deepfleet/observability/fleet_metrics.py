"""The fleet state file as Prometheus metrics: each replica's state and restart count, and per
model the replicas the controller wants against those ready, with its last scaling decision.

The controller keeps these facts in fleet.json (it has no HTTP server), so whoever serves
/sd/targets serves them too, at /metrics/fleet. Text format 0.0.4, written by hand: the
values are a pure function of one FleetState, with no registry to keep in step.
"""

from __future__ import annotations

import re

from deepfleet.fleet.state import FleetState, ReplicaState
from deepfleet.observability import names

COUNTDOWN = re.compile(r" in \d+s")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def render(state: FleetState | None) -> str:
    """One `deepfleet_replica_state` series per replica and state (1 for the current state,
    0 otherwise, so a panel or rule can count replicas by state) and the restart counters."""
    lines = [
        f"# HELP {names.REPLICA_STATE} Replica state from the controller: 1 for the current one.",
        f"# TYPE {names.REPLICA_STATE} gauge",
    ]
    replicas = state.replicas if state is not None else []
    for r in replicas:
        for s in ReplicaState:
            labels = _labels(replica=r.replica_id, model=r.model, node=r.node, state=s.value)
            lines.append(f"{names.REPLICA_STATE}{{{labels}}} {int(r.state is s)}")
    lines += [
        f"# HELP {names.REPLICA_RESTARTS} Engine restarts by its supervisor since the controller "
        "started.",
        f"# TYPE {names.REPLICA_RESTARTS} counter",
    ]
    for r in replicas:
        labels = _labels(replica=r.replica_id, model=r.model, node=r.node)
        lines.append(f"{names.REPLICA_RESTARTS}{{{labels}}} {r.restarts}")
    return "\n".join(lines + _scaling(state)) + "\n"


def _scaling(state: FleetState | None) -> list[str]:
    """Per model: desired replicas (the autoscaler's last decision; for a fixed count, the
    replicas it runs), ready ones (not draining), and the decision's reason as a label of a
    constant 1 (a countdown like `in 20s` is dropped, so a hold is one series, not one a tick).
    """
    desired, ready, decision = [], [], []
    replicas = state.replicas if state is not None else []
    for m in state.models if state is not None else []:
        mine = [r for r in replicas if r.model == m.name and not r.draining]
        model = _labels(model=m.name)
        want = len(mine) if m.desired is None else m.desired
        desired.append(f"{names.REPLICAS_DESIRED}{{{model}}} {want}")
        up = sum(r.state is ReplicaState.READY for r in mine)
        ready.append(f"{names.REPLICAS_READY}{{{model}}} {up}")
        reason = COUNTDOWN.sub("", m.reason) if m.reason else "fixed count (not autoscaled)"
        decision.append(f"{names.AUTOSCALE_DECISION}{{{_labels(model=m.name, reason=reason)}}} 1")
    return [
        f"# HELP {names.REPLICAS_DESIRED} Replicas the controller wants per model.",
        f"# TYPE {names.REPLICAS_DESIRED} gauge",
        *desired,
        f"# HELP {names.REPLICAS_READY} Ready replicas per model (not draining).",
        f"# TYPE {names.REPLICAS_READY} gauge",
        *ready,
        f"# HELP {names.AUTOSCALE_DECISION} The last scaling decision's reason: 1.",
        f"# TYPE {names.AUTOSCALE_DECISION} gauge",
        *decision,
    ]
