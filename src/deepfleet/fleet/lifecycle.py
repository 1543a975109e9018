"""The fleet's start/stop flow: `up` in the foreground, `up_detached`, and `down`.

- `up` takes the state dir's lock, resolves the models' paths, plans the replicas with the
  config's launcher, builds the controller with its companion services, and runs it until a
  stop signal (SIGINT, SIGTERM, SIGHUP) or the caller's stop event.
- `up_detached` starts `python -m deepfleet up ...` in its own session and returns once the
  fleet serves (deepfleet.fleet.readiness), or raises.
- `down` SIGTERMs the controller (which stops its engines and the gateway), waits, then kills
  whatever is left of the process groups the state file names.
Progress goes to an EventSink as deepfleet.fleet.events; failures are raised, never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from deepfleet.config import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.controller import Controller, Service
from deepfleet.fleet.events import (
    Adopted,
    ControllerKilled,
    EventSink,
    Serving,
    Starting,
    StateChanged,
    Stopped,
    StopRequested,
    ignore,
)
from deepfleet.fleet.front import KeyCheck, front_services, no_keys
from deepfleet.fleet.kv_store import kv_store_service
from deepfleet.fleet.launcher import build_launcher
from deepfleet.fleet.model_paths import model_paths
from deepfleet.fleet.process import pid_alive, same_process, signal_group
from deepfleet.fleet.readiness import (
    FleetNotReady,
    FleetStartFailed,
    gateway_view,
    processes_ready,
    wait_ready,
)
from deepfleet.fleet.rollout import Applier
from deepfleet.fleet.state import STATE_FILE, FleetState, read_state

LOCK_FILE = "controller.lock"
CONTROLLER_LOG = "controller.log"
DETACHED_ENV = "DEEPFLEET_DETACHED"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
APPLY_SIGNAL = signal.SIGUSR1
ServiceFactory = Callable[[FleetConfig, Path], Sequence[Service]]
"""Companion services beside the gateway (e.g. deepfleet.ui.ui_services); may raise."""


class FleetAlreadyRunning(Exception):
    pass


@contextlib.contextmanager
def fleet_lock(state_dir: Path) -> Iterator[None]:
    """One controller per state dir: an exclusive flock held while the block runs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        prev = read_state(state_dir / STATE_FILE)
        pid = f" (pid {prev.controller_pid})" if prev else ""
        raise FleetAlreadyRunning(
            f"a fleet is already running from {state_dir}{pid}; change it with "
            f"`deepfleet apply -f FILE`, or stop it with `deepfleet down`"
        ) from None
    try:
        yield
    finally:
        handle.close()


def no_services(cfg: FleetConfig, state_dir: Path) -> Sequence[Service]:
    return ()


class Sharer(Protocol):
    """Copies the fleet state where gateways on other hosts follow it (the CLI passes
    deepfleet.gateway.store.fleet_share's): told of each change, run by a thread of its own."""

    def __call__(self, state: FleetState) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


SharerFactory = Callable[[FleetConfig, Path], Sharer | None]


def no_sharer(cfg: FleetConfig, state_dir: Path) -> Sharer | None:
    return None


def build_controller(
    cfg: FleetConfig,
    state_dir: Path,
    on_event: EventSink = ignore,
    services: ServiceFactory = no_services,
    has_keys: KeyCheck = no_keys,
) -> Controller:
    """Plan the fleet and build its controller; nothing is started yet.

    Raises what a step raises with the fix in its message: LauncherError (cluster mode),
    bundled.BundledModelError, InfeasibleConfig (its `lines` say why and what would fit),
    KvStoreError, LoadBalancerError, or whatever `services` raises. The launcher is closed
    on failure.
    """
    launcher = build_launcher(cfg, state_dir)
    try:
        plans: list[ReplicaPlan] = launcher.plans(cfg, model_paths(cfg, on_event))
        store = kv_store_service(cfg, state_dir, plans)
        front = front_services(cfg, state_dir, has_keys)  # gateway.instances > 1
        extra = [*([store] if store else []), *front, *services(cfg, state_dir)]
    except BaseException:
        asyncio.run(launcher.close())
        raise
    # A dead controller's processes are adopted; a live one's never (up holds the lock, so
    # the check only guards other callers).
    previous = read_state(state_dir / STATE_FILE)
    if previous and same_process(previous.controller_pid, previous.controller_start):
        previous = None
    return Controller(cfg, state_dir, plans, services=extra, launcher=launcher, previous=previous)


async def _announce(controller: Controller, changed: asyncio.Event, on_event: EventSink) -> None:
    """Send Serving once the state file's processes are ready and the gateway agrees."""
    while True:
        await changed.wait()
        changed.clear()
        while processes_ready(controller.state):
            view = await asyncio.to_thread(gateway_view, controller.state.gateway_url)
            if view.ready:
                on_event(Serving(controller.state))
                return
            await asyncio.sleep(0.2)


async def serve(
    controller: Controller,
    on_event: EventSink = ignore,
    stop: asyncio.Event | None = None,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
    autoscaler: FleetAutoscaler | None = None,
    sharer: Sharer | None = None,
) -> None:
    """Run `controller` until `stop` is set or one of `signals` arrives, reporting each
    state change and, once, Serving. Models with `replicas: {min, max}` are scaled by
    `autoscaler` (by default one with the controller's settings). `sharer` hears every
    state change while it runs (and is stopped after the last)."""
    stop = stop or asyncio.Event()
    autoscaler = autoscaler or FleetAutoscaler(controller)
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        on_event(StopRequested(sig.name, again=stop.is_set()))
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    changed = asyncio.Event()

    def on_change(state: FleetState) -> None:
        on_event(StateChanged(state))
        changed.set()

    controller.subscribe(on_change)
    if sharer is not None:  # the fleet state for gateways on other hosts
        controller.subscribe(sharer)
        sharer.start()
    announcer = asyncio.ensure_future(_announce(controller, changed, on_event))
    applier = Applier(controller)  # `deepfleet apply` writes its request, then sends SIGUSR1
    loop.add_signal_handler(APPLY_SIGNAL, applier.requested)
    scaling = asyncio.ensure_future(autoscaler.run()) if autoscaler else None
    try:
        await controller.run(stop)
    finally:
        loop.remove_signal_handler(APPLY_SIGNAL)
        await applier.close()
        if scaling is not None:
            scaling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scaling
        announcer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announcer
        if sharer is not None:
            await asyncio.to_thread(sharer.stop)
        for sig in signals:
            loop.remove_signal_handler(sig)


def up(
    cfg: FleetConfig,
    state_dir: Path,
    on_event: EventSink = ignore,
    services: ServiceFactory = no_services,
    has_keys: KeyCheck = no_keys,
    share: SharerFactory = no_sharer,
) -> None:
    """Start the fleet in this process and run it until a stop signal (see the module
    docstring). `has_keys` lets HAProxy (gateway.instances > 1) bind a non-loopback
    address; `share` gives what copies the fleet state for gateways on other hosts
    (gateway.state.share_fleet). Raises FleetAlreadyRunning, or what build_controller or
    `share` raises."""
    with fleet_lock(state_dir):
        controller = build_controller(cfg, state_dir, on_event, services, has_keys)
        url = controller.state.gateway_url
        adoption = controller.adoption
        if adoption.ids or adoption.stale:
            on_event(Adopted(adoption.ids, [s.replica_id for s in adoption.stale]))
        sharer = share(cfg, state_dir)
        on_event(Starting(len(controller.supervisors), url, state_dir / "logs"))
        asyncio.run(serve(controller, on_event, sharer=sharer))
        on_event(Stopped())


def up_detached(
    argv: Sequence[str], state_dir: Path, timeout_s: float, on_event: EventSink = ignore
) -> FleetState:
    """Start `python -m deepfleet up ARGV --state-dir STATE_DIR` in its own session (logging
    to controller.log there) and return its state once it serves. Raises FleetStartFailed
    when it exits first and FleetNotReady after `timeout_s` (it keeps starting)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / CONTROLLER_LOG
    with log.open("ab") as fh:
        child = subprocess.Popen(
            [sys.executable, "-m", "deepfleet", "up", *argv, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, DETACHED_ENV: "1"},
        )
    try:
        return wait_ready(state_dir, timeout_s, process=child, on_event=on_event)
    except FleetStartFailed as exc:
        raise FleetStartFailed(f"{exc}; see {log}", exc.returncode) from None
    except FleetNotReady as exc:
        raise FleetNotReady(
            f"{exc}; it keeps starting in the background (pid {child.pid}); see "
            f"`deepfleet status` and {log} (wait longer with `up --detach --timeout`)"
        ) from None


def fleet_groups(state: FleetState) -> list[int]:
    """The process groups a fleet's controller started on this machine. In cluster mode
    replicas run on other nodes; Ray and each engine's guard end them."""
    return [pid for pid, _ in _recorded_groups(state)]


def _recorded_groups(state: FleetState) -> list[tuple[int, int | None]]:
    local = state.replicas if state.cluster == "local" else []
    gateway = [state.gateway] if state.gateway else []
    return [(r.pid, r.pid_start) for r in [*gateway, *local, *state.services] if r.pid]


def down(
    state_dir: Path,
    timeout_s: float = 60.0,
    on_event: EventSink = ignore,
    *,
    poll_s: float = 0.2,
) -> bool:
    """Stop the fleet of `state_dir`: SIGTERM its controller, wait up to `timeout_s` for it
    and its processes, SIGKILL the controller if it is still there, then kill every group
    the state names. False when nothing of it was running (no state, or a stale one).

    Only processes that are still the ones fleet.json recorded (same pid AND start time,
    checked before any signal) are touched: a stale file's pids may belong to other
    programs now. A checked group may be killed after its leader exits: its number cannot
    be given to another process while any member of the group lives."""
    state = read_state(state_dir / STATE_FILE)
    if state is None:
        return False
    controller = state.controller_pid
    ours = same_process(controller, state.controller_start)
    groups = [pid for pid, start in _recorded_groups(state) if same_process(pid, start)]
    if not ours and not groups:
        return bool(_cluster_leftovers(state, state_dir))
    if ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGTERM)
    mine = [controller] if ours else []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in [*mine, *groups]):
        time.sleep(poll_s)
    if ours and same_process(controller, state.controller_start):
        on_event(ControllerKilled(controller, timeout_s))
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGKILL)
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    _cluster_leftovers(state, state_dir)
    on_event(Stopped())
    return True


def _cluster_leftovers(state: FleetState, state_dir: Path) -> list[str]:
    """Ray mode: the engines' actors outlive a dead controller (fleet/ray/detached.py)."""
    if state.cluster != "ray":
        return []
    from deepfleet.fleet.ray.connect import remove_fleet  # imports Ray: cluster mode only

    return remove_fleet(state_dir)
