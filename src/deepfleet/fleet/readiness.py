"""When a fleet serves: every process ready in the state file, and the gateway routing.

The state file says what the controller saw; the gateway follows that file on its own clock,
so for a moment after a replica turns ready the gateway may still answer 503 "no ready
replica". A fleet serves only when the gateway agrees: its `/ready` answers 200 once every
model has a ready endpoint in the gateway's own table. Every waiter (`up --detach`, the
foreground announcement, the end-to-end fixtures) asks both through this module.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from deepfleet.fleet.events import EventSink, StartProgress, ignore
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, read_state


class FleetNotReady(Exception):
    """The fleet did not serve within the timeout; the message says what it still waits for."""


class FleetStartFailed(Exception):
    """The process that runs the fleet exited while it was starting."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True)
class GatewayView:
    """The gateway's own answer to GET /ready: `ready`, or `detail` saying why not."""

    ready: bool
    detail: str


def gateway_view(url: str, timeout_s: float = 2.0) -> GatewayView:
    """GET `url`/ready: 200 when every model has a ready endpoint in the gateway's table."""
    try:
        r = httpx.get(f"{url}/ready", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return GatewayView(False, f"the gateway at {url} does not answer ({exc})")
    if r.status_code == 200:
        return GatewayView(True, "")
    return GatewayView(False, f"the gateway's /ready answered {r.status_code} {r.text.strip()}")


def processes_ready(state: FleetState) -> bool:
    """The state file's view: the fleet is not stopping, and the gateway, at least one
    replica, and every replica and service are ready."""
    return (
        not state.stopping
        and state.gateway is not None
        and state.gateway.state is ReplicaState.READY
        and bool(state.replicas)
        and all(r.state is ReplicaState.READY for r in [*state.replicas, *state.services])
    )


def waiting_for(state: FleetState | None) -> str:
    """What a starting fleet still waits for, for a timeout message."""
    if state is None:
        return f"no {STATE_FILE} was written yet"
    if state.stopping:
        return "the fleet is stopping"
    procs = [*([state.gateway] if state.gateway else []), *state.replicas, *state.services]
    ready = ReplicaState.READY
    pending = [f"{p.replica_id} is {p.state.value}" for p in procs if p.state is not ready]
    if state.gateway is None:
        pending.insert(0, "the gateway has not started")
    if not state.replicas:
        pending.append("no replica was planned")
    return ", ".join(pending)


Probe = Callable[[str], GatewayView]


def wait_ready(
    state_dir: Path,
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    on_event: EventSink = ignore,
    probe: Probe = gateway_view,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> FleetState:
    """Block until the fleet of `state_dir` serves (see the module docstring); its state.

    With `process` (the `deepfleet up` that runs the controller) only a state written by that
    process counts, and its exit raises FleetStartFailed. After `timeout_s` raises
    FleetNotReady naming what is not ready yet. Reports StartProgress while it waits.
    """
    started = clock()
    while True:
        state = read_state(state_dir / STATE_FILE)
        if process is not None and state is not None and state.controller_pid != process.pid:
            state = None  # an earlier fleet's file
        view = None
        if state is not None and processes_ready(state):
            view = probe(state.gateway_url)
            if view.ready:
                return state
        if process is not None and process.poll() is not None:
            raise FleetStartFailed(
                f"the fleet stopped during startup (exit {process.returncode})",
                process.returncode,
            )
        elapsed = clock() - started
        if elapsed > timeout_s:
            why = view.detail if view is not None else waiting_for(state)
            raise FleetNotReady(f"not ready after {timeout_s:.0f}s: {why}")
        if state is not None:
            ready = sum(r.state is ReplicaState.READY for r in state.replicas)
            on_event(StartProgress(ready, len(state.replicas), elapsed))
        sleep(poll_s)
