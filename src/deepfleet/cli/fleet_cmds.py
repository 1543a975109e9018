"""`deepfleet up`, `down` and `status`: start, stop and inspect a fleet."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from deepfleet.catalog.bundled import BundledModelError
from deepfleet.cli.common import (
    FILE_OPT,
    STATE_OPT,
    console,
    current_state,
    fail,
    load_config,
    out,
    resolve_state_dir,
)
from deepfleet.cli.live import fleet_table, nodes_table, state_json
from deepfleet.cli.progress import Progress, print_ready
from deepfleet.cli.spread_cmd import spread_text
from deepfleet.cli.weights_cmd import pull_fleet_weights
from deepfleet.config import FleetConfig
from deepfleet.config.state import StateError
from deepfleet.fleet import lifecycle
from deepfleet.fleet.adopt import survivors
from deepfleet.fleet.front import KeyCheck
from deepfleet.fleet.gateways import LoadBalancerError
from deepfleet.fleet.kv_store import KvStoreError
from deepfleet.fleet.launcher import LauncherError
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.readiness import FleetNotReady, FleetStartFailed
from deepfleet.fleet.replicas import InfeasibleConfig
from deepfleet.gateway.store.open import has_keys
from deepfleet.ui import UiSetupError, ui_notes, ui_services
from deepfleet.weights.spread_plan import read_progress


def _key_check(cfg: FleetConfig) -> KeyCheck:
    """Whether the config's state backend (SQLite at the path given, or PostgreSQL) holds an
    API key: HAProxy binds a non-loopback address only then."""
    return functools.partial(has_keys, cfg.gateway.state)


def _foreground(cfg: FleetConfig, state_dir: Path) -> None:
    with Progress(console, lambda: ui_notes(cfg, state_dir)) as progress:
        try:
            lifecycle.up(cfg, state_dir, progress, services=ui_services, has_keys=_key_check(cfg))
        except InfeasibleConfig as exc:
            for line in exc.lines:
                console.print(line)
            fail(
                "the config does not fit its cluster (see above); `deepfleet plan -f FILE` explains"
            )
        except (
            lifecycle.FleetAlreadyRunning,
            LauncherError,
            BundledModelError,
            KvStoreError,
            LoadBalancerError,
            StateError,
            UiSetupError,
        ) as exc:
            fail(str(exc))
    console.print("fleet stopped")


def _detached(argv: list[str], state_dir: Path, timeout_s: float, as_json: bool) -> None:
    with Progress(console) as progress, progress.spinner("starting the fleet in the background"):
        try:
            state = lifecycle.up_detached(argv, state_dir, timeout_s, progress)
        except (FleetStartFailed, FleetNotReady) as exc:
            fail(str(exc))
    if as_json:
        out.print_json(json.dumps(state_json(state)))
        return
    if state.adopted:
        console.print(
            "adopted what a dead controller left running (same processes, not restarted): "
            + ", ".join(state.adopted)
        )
    print_ready(state)


def up(
    file: Path | None = FILE_OPT,
    host: str | None = typer.Option(None, "--host", help="Gateway bind address."),
    port: int | None = typer.Option(None, "--port", help="Gateway port."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
    state_dir: Path | None = STATE_OPT,
    ui: bool = typer.Option(False, "--ui", help="Also start Open-WebUI (see `ui:`)."),
    timeout: float = typer.Option(
        900, "--timeout", help="With --detach: seconds to wait for the fleet to serve."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="With --detach: print the serving fleet's state (`adopted` lists "
        "the processes taken over from a dead controller).",
    ),
) -> None:
    """Start the fleet: prepare models, start engines and the gateway, supervise them. On a
    fleet whose controller died, adopt the engines and gateways that still run (docs/lb.md)."""
    if as_json and not detach:
        fail("--json needs --detach (a foreground fleet prints its progress as it runs)")
    cfg = load_config(file)
    if host is not None:
        cfg.gateway.host = host
    if port is not None:
        cfg.gateway.port = port
    cfg.ui.enabled = cfg.ui.enabled or ui
    cfg = pull_fleet_weights(cfg)
    sdir = resolve_state_dir(cfg, state_dir)
    if not detach:
        _foreground(cfg, sdir)
        return
    argv = [
        *(["-f", str(file)] if file else []),
        *(["--host", host] if host else []),
        *(["--port", str(port)] if port else []),
        *(["--ui"] if ui else []),
    ]
    _detached(argv, sdir, timeout, as_json)
    if as_json:
        return
    for line in ui_notes(cfg, sdir):
        out.print(line)


def down(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    timeout: float = typer.Option(60, "--timeout", help="Seconds before SIGKILL."),
) -> None:
    """Stop the fleet started from this state dir; nothing is left running (in cluster
    mode: its replicas' engines, supervisor actors and placement groups)."""
    sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
    with Progress(console) as progress, progress.spinner("stopping the fleet"):
        try:
            stopped = lifecycle.down(sdir, timeout, progress)
        except LauncherError as exc:  # Ray mode: its cluster refused to remove the engines
            fail(str(exc))
    out.print("fleet stopped" if stopped else f"no fleet is running from {sdir}")


def status(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Replicas with state, endpoint, pid, uptime and restarts; in cluster mode also
    each replica's layout, nodes and load, and the cluster's nodes."""
    sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
    state = current_state(sdir)
    spread = read_progress(sdir)
    if as_json:
        extra = {} if spread is None else {"weights_spread": spread}  # only while one ran
        out.print_json(json.dumps({**state_json(state), **extra}))
        return
    if spread is not None:
        out.print(spread_text(spread))
    left = survivors(state) if state and not pid_alive(state.controller_pid) else []
    if state is None or (not pid_alive(state.controller_pid) and not left):
        out.print(f"no fleet is running from {sdir}")
        raise typer.Exit(3)
    if left:
        out.print(
            f"[yellow]the controller (pid {state.controller_pid}) is not running[/]; "
            f"{len(left)} of its processes still run: `deepfleet up` with the same config "
            "adopts them, `deepfleet down` stops them"
        )
    out.print(fleet_table(state))
    if state.nodes:
        out.print(nodes_table(state))


def register(app: typer.Typer) -> None:
    for command in (up, down, status):
        app.command()(command)
