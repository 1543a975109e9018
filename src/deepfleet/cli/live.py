"""How a fleet's state is shown: a line per state change, a table, and JSON."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.state import FleetState, NodeStatus, ReplicaStatus

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
            extra += f" [{r.detail}]" if r.detail else ""
            extra += f" on {', '.join(r.nodes)}" if r.nodes and key == "ready" else ""
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
    cluster = state.cluster != "local"
    devices = any(r.devices for r in state.replicas)
    roles = any(r.role for r in state.replicas)  # a disaggregated model's prefill/decode
    cols = ["replica", "model", "engine", "state", "endpoint", "pid", "uptime", "restarts"]
    cols += ["role"] * roles + (["layout", "nodes", "load"] if cluster else [])
    for col in cols + ["devices"] * devices:
        table.add_column(col)
    for r in [*([state.gateway] if state.gateway else []), *state.replicas, *state.services]:
        color = _COLORS.get(r.state.value, "white")
        row = [
            r.replica_id,
            r.model,
            r.engine,
            f"[{color}]{r.state.value}[/]"
            + (" [yellow]draining[/]" if r.draining else "")
            + (f" ({r.detail})" if r.detail else ""),
            r.url,
            str(r.pid or "-"),
            _uptime(r),
            str(r.restarts),
        ]
        if roles:
            row.append(r.role or "-")
        if cluster:
            load = "-" if r.load is None else f"{r.load:g}"
            row += [r.layout or "-", ", ".join(r.nodes) or "-", load]
        if devices:
            row.append(",".join(r.devices) or "-")
        table.add_row(*row)
    table.caption = "\n".join(scaling_lines(state)) or None
    return table


def scaling_lines(state: FleetState) -> list[str]:
    """Per autoscaled model: ready vs desired replicas and the last decision's reason."""
    lines = []
    for m in state.models:
        if m.desired is None:
            continue
        ready = sum(
            r.model == m.name and r.state.value == "ready" and not r.draining
            for r in state.replicas
        )
        lines.append(f"{m.name}: {ready} ready, desired {m.desired} ({m.reason})")
    return lines


def _devices(n: NodeStatus) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in n.devices.items()) or "-"


def nodes_table(state: FleetState) -> Table:
    """The cluster's nodes, and the replicas each one hosts."""
    table = Table(
        title=f"{state.cluster} cluster: {sum(n.alive for n in state.nodes)} alive node(s)"
    )
    for col in ("node", "address", "alive", "devices", "memory", "replicas"):
        table.add_column(col)
    for n in state.nodes:
        hosted = [r.replica_id for r in state.replicas if n.address in r.nodes]
        table.add_row(
            n.node_id[:12] + (" (head)" if n.head else ""),
            n.address,
            "[green]yes[/]" if n.alive else "[red]no[/]",
            _devices(n),
            f"{n.memory_bytes / 2**30:.1f} GiB",
            ", ".join(hosted) or "-",
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
        "layout": r.layout,
        "nodes": r.nodes,
        "load": r.load,
        "detail": r.detail,
        "devices": r.devices,
        "draining": r.draining,
        "generation": r.generation,
        "engine_args": r.engine_args,
        "role": r.role or None,
    }


def _node_json(n: NodeStatus) -> dict[str, Any]:
    return {
        "id": n.node_id,
        "address": n.address,
        "alive": n.alive,
        "head": n.head,
        "hostname": n.hostname,
        "devices": n.devices,
        "memory_bytes": n.memory_bytes,
    }


def state_json(state: FleetState | None) -> dict[str, Any]:
    if state is None:
        return {"running": False, "replicas": [], "services": []}
    return {
        "running": pid_alive(state.controller_pid) and not state.stopping,
        "controller_pid": state.controller_pid,
        "gateway_url": state.gateway_url,
        "gateway": _replica_json(state.gateway) if state.gateway else None,
        "models": [
            {"name": m.name, "routing": m.routing, "desired": m.desired, "reason": m.reason}
            for m in state.models
        ],
        "replicas": [_replica_json(r) for r in state.replicas],
        "services": [_replica_json(s) for s in state.services],
        "cluster": state.cluster,
        "nodes": [_node_json(n) for n in state.nodes],
        "updated_at": state.updated_at,
        "apply": asdict(state.apply) if state.apply else None,
        "adopted": state.adopted,
    }
