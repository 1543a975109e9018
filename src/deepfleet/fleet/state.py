"""The fleet state file: what the controller knows, read by the gateway and `deepfleet status`.

Written atomically (fleet.files.atomic_write: fsynced temp file, rename, fsynced folder) and
private (0600) on every change, so a reader never sees half a file and a crash or a full disk
leaves the last good state behind.

Readers ignore keys they do not know: during a rolling upgrade an older gateway or `status`
reads the file a newer controller wrote, and must still see the fleet rather than none. Keys
a reader needs (a replica's id, url, state) stay required.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from deepfleet.fleet.files import atomic_write

log = logging.getLogger(__name__)

STATE_FILE = "fleet.json"
_T = TypeVar("_T")


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
    # Where the engine publishes its KV events (kvcache/endpoints.py); None: tcp on the port.
    kv_events_endpoint: str | None = None
    # The engine bound kv_events_endpoint itself (a Ray replica's, on its node): we connect.
    kv_events_bound: bool = False
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
    role: str = ""  # `prefill` or `decode` in a disaggregated model (gateway/pd.py)
    engine_args: dict[str, Any] = field(default_factory=dict)  # its model's, as configured
    config_hash: str | None = None  # what it was started from (deepfleet.fleet.adopt)

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
    # `replicas.min: 0`: how long a request for the model waits while none is ready (its
    # start time, set by the autoscaler); None: the model is not scaled to zero.
    cold_wait_s: float | None = None


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
    adopted: list[str] = field(default_factory=list)  # ids this controller took over running

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetState:
        return cls(
            controller_pid=data["controller_pid"],
            gateway_url=data["gateway_url"],
            models=[_known(ModelRoute, m) for m in data.get("models", [])],
            replicas=[_status(r) for r in data.get("replicas", [])],
            gateway=_status(data["gateway"]) if data.get("gateway") else None,
            services=[_status(r) for r in data.get("services", [])],
            updated_at=data.get("updated_at", 0.0),
            stopping=data.get("stopping", False),
            cluster=data.get("cluster", "local"),
            nodes=[_known(NodeStatus, n) for n in data.get("nodes", [])],
            apply=_known(ApplyStatus, data["apply"]) if data.get("apply") else None,
            controller_start=data.get("controller_start"),
            adopted=data.get("adopted", []),
        )


def _status(data: dict[str, Any]) -> ReplicaStatus:
    return _known(ReplicaStatus, {**data, "state": ReplicaState(data["state"])})


def _known(cls: type[_T], data: dict[str, Any]) -> _T:
    """`cls(**data)` without the keys `cls` has no field for (a newer writer's)."""
    names = _field_names(cls)
    unknown = data.keys() - names
    if unknown:
        _log_unknown(cls.__name__, tuple(sorted(unknown)))
        data = {k: v for k, v in data.items() if k in names}
    return cls(**data)


def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


@functools.cache
def _log_unknown(kind: str, keys: tuple[str, ...]) -> None:
    """Once per class and set of keys: a file from a newer deepfleet is read every 0.2 s."""
    log.debug("%s: ignoring %s keys of a newer deepfleet: %s", STATE_FILE, kind, ", ".join(keys))


def write_state(path: Path, state: FleetState) -> None:
    """Replace the state file; raises OSError (e.g. a full disk) with the old file intact."""
    state.updated_at = time.time()
    atomic_write(path, json.dumps(state.to_json(), indent=1))


def read_state(path: Path) -> FleetState | None:
    """The last written state, or None when there is none (or it cannot be parsed)."""
    try:
        return parse_state(path.read_bytes())
    except OSError:
        return None


def parse_state(raw: bytes) -> FleetState | None:
    """fleet.json's bytes as a state; None when they cannot be parsed (a torn write)."""
    try:
        return FleetState.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError):
        return None


Listener = Callable[[FleetState], None]
RECENT_NS = 2_000_000_000
"""A file whose mtime is this recent may have been written again within the same tick."""


class StateFollower:
    """fleet.json as it changes: `poll()` stats it and parses it again only when it changed
    (cheap enough to call every 200 ms), then hands the new state to each listener in the
    order they listened. A changed mtime is not enough to tell: Linux stamps files from a
    coarse clock (one tick is 4 ms at HZ=250), so two writes in one tick (a replica's
    "starting" then "ready") can leave the same mtime, inode number (a freed one is reused)
    and size, and the second went unseen until the next write (a gateway test saw a ready
    replica as unavailable). While the file's mtime is recent its bytes are compared too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state: FleetState | None = None
        """The last state read, None before the first."""
        self._stat: tuple[int, int, int] | None = None
        self._bytes = b""
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def poll(self) -> bool:
        """Re-read the file if it changed; True if it did (the listeners were called)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        stat = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stat == self._stat and time.time_ns() - st.st_mtime_ns > RECENT_NS:
            return False
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return False
        if raw == self._bytes:
            self._stat = stat
            return False
        state = parse_state(raw)
        if state is None:
            return False
        self._stat, self._bytes, self.state = stat, raw, state
        for listener in self._listeners:
            listener(state)
        return True
