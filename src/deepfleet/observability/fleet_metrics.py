"""The fleet state file as Prometheus metrics: each replica's state and restart count.

The controller keeps these facts in fleet.json (it has no HTTP server), so whoever serves
/sd/targets serves them too, at /metrics/fleet. Text format 0.0.4, written by hand: the
values are a pure function of one FleetState, with no registry to keep in step.
"""

from __future__ import annotations

from deepfleet.fleet.state import FleetState, ReplicaState
from deepfleet.observability import names

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
    return "\n".join(lines) + "\n"
