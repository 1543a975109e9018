"""How a fleet's state is shown: a line per state change, a table, and JSON."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from deepfleet.fleet.state import FleetState, ReplicaStatus, pid_alive

_COLORS = {
    "ready": "green",
    "starting": "yellow",
    "restarting": "red",
    "unhealthy": "red",
    "failed": "red",
    "stopping": "dim",
    "stopped": "dim",
}


class StatusPrinter:
    """Prints one line whenever a process changes state, with the reason for restarts."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._seen: dict[str, str] = {}
        self._t0 = time.monotonic()

    def update(self, state: FleetState) -> None:
        for r in [*([state.gateway] if state.gateway else []), *state.replicas, *state.services]:
            key = r.state.value
            if self._seen.get(r.replica_id) == key:
                continue
            self._seen[r.replica_id] = key
            color = _COLORS.get(key, "white")
            extra = f" ({r.last_exit})" if key == "restarting" and r.last_exit else ""
            pid = f" pid {r.pid}" if r.pid else ""
            self._console.print(
                f"[dim]{time.monotonic() - self._t0:6.1f}s[/] {r.replica_id}: "
                f"[{color}]{key}[/]{pid} {r.url}{extra}"
            )


def _uptime(r: ReplicaStatus) -> str:
    up = r.uptime_s if r.state.value == "ready" else None
    if up is None:
        return "-"
    return f"{up:.0f}s" if up < 120 else f"{up / 60:.0f}m"


def fleet_table(state: FleetState) -> Table:
    table = Table(title=f"deepfleet at {state.gateway_url} (controller pid {state.controller_pid})")
    for col in ("replica", "model", "engine", "state", "endpoint", "pid", "uptime", "restarts"):
        table.add_column(col)
    for r in [*([state.gateway] if state.gateway else []), *state.replicas, *state.services]:
        color = _COLORS.get(r.state.value, "white")
        table.add_row(
            r.replica_id,
            r.model,
            r.engine,
            f"[{color}]{r.state.value}[/]",
            r.url,
            str(r.pid or "-"),
            _uptime(r),
            str(r.restarts),
        )
    return table


def _replica_json(r: ReplicaStatus) -> dict[str, Any]:
    return {
        "id": r.replica_id,
        "model": r.model,
        "engine": r.engine,
        "state": r.state.value,
        "endpoint": r.url,
        "pid": r.pid,
        "uptime_s": round(r.uptime_s, 1) if r.uptime_s else None,
        "restarts": r.restarts,
        "last_exit": r.last_exit,
        "log": r.log,
        "node": r.node,
    }


def state_json(state: FleetState | None) -> dict[str, Any]:
    if state is None:
        return {"running": False, "replicas": [], "services": []}
    return {
        "running": pid_alive(state.controller_pid) and not state.stopping,
        "controller_pid": state.controller_pid,
        "gateway_url": state.gateway_url,
        "gateway": _replica_json(state.gateway) if state.gateway else None,
        "models": [{"name": m.name, "routing": m.routing} for m in state.models],
        "replicas": [_replica_json(r) for r in state.replicas],
        "services": [_replica_json(s) for s in state.services],
        "updated_at": state.updated_at,
    }
