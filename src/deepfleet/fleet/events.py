"""What the fleet's start/stop flow reports while it works, as small immutable events.

The flow (deepfleet.fleet.lifecycle) hands each event to one callback, the `EventSink`; the CLI
renders them, a test records them, a library caller may ignore them. Failures are not events:
they are raised as exceptions whose message names the field or flag to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfleet.fleet.state import FleetState


@dataclass(frozen=True)
class PreparingModel:
    """The bundled model is being converted; `step` says which part (empty at the start)."""

    step: str
    elapsed_s: float


@dataclass(frozen=True)
class ModelPrepared:
    """The bundled model was converted and is ready at `path` (not sent when it already was)."""

    path: Path
    elapsed_s: float


@dataclass(frozen=True)
class Starting:
    """The controller is built and about to start its replicas and the gateway."""

    replicas: int
    gateway_url: str
    logs: Path


@dataclass(frozen=True)
class Adopted:
    """A dead controller's processes that still ran: `adopted` (ids, taken over with the same
    pids) and `replaced` (running with another config: stopped, started again)."""

    adopted: list[str]
    replaced: list[str]


@dataclass(frozen=True)
class StateChanged:
    """The controller published a new state (a replica, service or the gateway changed)."""

    state: FleetState


@dataclass(frozen=True)
class StartProgress:
    """Waiting for a fleet to serve: `ready` of `total` replicas, `elapsed_s` since the start."""

    ready: int
    total: int
    elapsed_s: float


@dataclass(frozen=True)
class Serving:
    """Every replica and service is ready and the gateway routes to every model."""

    state: FleetState


@dataclass(frozen=True)
class StopRequested:
    """A signal asked the fleet to stop; `again` when it was already stopping."""

    signal: str
    again: bool


@dataclass(frozen=True)
class ControllerKilled:
    """The controller did not stop within `timeout_s` of SIGTERM and got SIGKILL."""

    pid: int
    timeout_s: float


@dataclass(frozen=True)
class Stopped:
    """The fleet stopped: every process it started has exited."""


FleetEvent = (
    PreparingModel
    | ModelPrepared
    | Starting
    | Adopted
    | StateChanged
    | StartProgress
    | Serving
    | StopRequested
    | ControllerKilled
    | Stopped
)
EventSink = Callable[[FleetEvent], None]


def ignore(event: FleetEvent) -> None:
    """The sink for callers that want no progress."""
