"""The fleet state file: what the controller knows, read by the gateway and `deepfleet status`.

Written atomically (fleet.files.atomic_write: fsynced temp file, rename, fsynced folder) and
private (0600) on every change, so a reader never sees half a file and a crash or a full disk
leaves the last good state behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from deepfleet.fleet.files import atomic_write

STATE_FILE = "fleet.json"


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class ReplicaStatus:
    """One supervised process: an engine replica, or the gateway (engine "gateway")."""

    replica_id: str
    model: str
    engine: str
    url: str
    state: ReplicaState = ReplicaState.STARTING
    pid: int | None = None
    pid_start: int | None = None  # the pid's start time (fleet.process.pid_start_time)
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    log: str | None = None
    kv_events_port: int | None = None
    node: str = "local"
    # Cluster mode: how the replica is split, every node it runs on, and its engine's queue
    # (running + waiting requests, as the engine reports them).
    layout: str | None = None
    nodes: list[str] = field(default_factory=list)
    load: float | None = None
    detail: str | None = None  # what a starting replica waits for, e.g. free devices
    devices: list[str] = field(default_factory=list)  # local mode: the accelerators it was given
    generation: int = 0  # the `deepfleet apply` that started it (0: `up`)
    draining: bool = False  # the gateway sends it no new requests; it stops once idle
    engine_args: dict[str, Any] = field(default_factory=dict)  # its model's, as configured

    @property
    def uptime_s(self) -> float | None:
        return time.time() - self.ready_at if self.ready_at else None


@dataclass
class ModelRoute:
    """What the gateway needs to route one model: its policy, context, and (for KV-aware
    routing) where its tokenizer lives and the engine's KV block size."""

    name: str
    routing: str
    max_model_len: int | None = None
    tokenizer: str | None = None  # a local folder with tokenizer.json, or None
    block_size: int | None = None
    migration_limit: int | None = None  # None: the gateway's default
    queue_timeout_s: float | None = None  # wait for a replica that is coming; None: 60 s
    desired: int | None = None  # the autoscaler's last decision (replicas: {min, max} only)
    reason: str | None = None  # and why


@dataclass
class NodeStatus:
    """One node of the cluster as the controller last saw it (cluster mode only)."""

    node_id: str
    address: str
    alive: bool
    head: bool = False
    hostname: str = ""
    devices: dict[str, float] = field(default_factory=dict)
    """Accelerators and CPUs the node offers, e.g. {"GPU": 8, "CPU": 96}."""
    memory_bytes: int = 0


@dataclass
class ApplyStatus:
    """The last `deepfleet apply` the controller took: its number, what it is doing now, the
    steps done, and why it failed (None while it runs or once it succeeded)."""

    generation: int
    phase: str = "planning"  # planning, running, done, failed
    steps: list[str] = field(default_factory=list)
    error: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed")


@dataclass
class FleetState:
    controller_pid: int
    gateway_url: str
    models: list[ModelRoute] = field(default_factory=list)
    replicas: list[ReplicaStatus] = field(default_factory=list)
    gateway: ReplicaStatus | None = None
    services: list[ReplicaStatus] = field(default_factory=list)
    updated_at: float = 0.0
    stopping: bool = False
    cluster: str = "local"
    nodes: list[NodeStatus] = field(default_factory=list)
    apply: ApplyStatus | None = None
    controller_start: int | None = None  # the controller's start time (pid_start_time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetState:
        return cls(
            controller_pid=data["controller_pid"],
            gateway_url=data["gateway_url"],
            models=[ModelRoute(**m) for m in data.get("models", [])],
            replicas=[_status(r) for r in data.get("replicas", [])],
            gateway=_status(data["gateway"]) if data.get("gateway") else None,
            services=[_status(r) for r in data.get("services", [])],
            updated_at=data.get("updated_at", 0.0),
            stopping=data.get("stopping", False),
            cluster=data.get("cluster", "local"),
            nodes=[NodeStatus(**n) for n in data.get("nodes", [])],
            apply=ApplyStatus(**data["apply"]) if data.get("apply") else None,
            controller_start=data.get("controller_start"),
        )


def _status(data: dict[str, Any]) -> ReplicaStatus:
    return ReplicaStatus(**{**data, "state": ReplicaState(data["state"])})


def write_state(path: Path, state: FleetState) -> None:
    """Replace the state file; raises OSError (e.g. a full disk) with the old file intact."""
    state.updated_at = time.time()
    atomic_write(path, json.dumps(state.to_json(), indent=1))


def read_state(path: Path) -> FleetState | None:
    """The last written state, or None when there is none (or it cannot be parsed)."""
    try:
        return FleetState.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
