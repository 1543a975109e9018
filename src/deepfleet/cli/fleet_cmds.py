"""`deepfleet up`, `down` and `status`: start, stop and inspect a fleet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

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
from deepfleet.cli.live import StatusPrinter, fleet_table, nodes_table, state_json
from deepfleet.cli.models_cmds import prepare_bundled
from deepfleet.cli.weights_cmd import pull_fleet_weights
from deepfleet.config import FleetConfig
from deepfleet.fleet.controller import Controller, FleetAlreadyRunning, acquire_lock
from deepfleet.fleet.kv_store import KvStoreError, kv_store_service
from deepfleet.fleet.launcher import Launcher, LauncherError, build_launcher
from deepfleet.fleet.replicas import InfeasibleConfig
from deepfleet.fleet.state import FleetState, ReplicaState, pid_alive
from deepfleet.ui import UiSetupError, ui_notes, ui_services

DETACHED_ENV = "DEEPFLEET_DETACHED"


def _model_paths(cfg: FleetConfig) -> dict[str, str]:
    paths: dict[str, str] = {}
    for m in cfg.models:
        if m.is_bundled:
            paths[m.name] = str(prepare_bundled().path)
        elif m.is_local_path:
            paths[m.name] = str(Path(m.source).expanduser().resolve())
        else:
            paths[m.name] = m.source  # a hub id: the engine downloads it
    return paths


def _all_ready(state: FleetState) -> bool:
    return (
        state.gateway is not None
        and state.gateway.state is ReplicaState.READY
        and bool(state.replicas)
        and all(r.state is ReplicaState.READY for r in [*state.replicas, *state.services])
    )


def _print_ready(state: FleetState) -> None:
    model = state.models[0].name if state.models else "MODEL"
    url = state.gateway_url
    out.print(f"\n[bold green]deepfleet is serving[/] at {url}/v1")
    out.print(
        f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", '
        f'"content": "What is the capital of France?"}}]}}\''
    )
    out.print(
        "  deepfleet chat 'What is the capital of France?'   |   deepfleet status   |   "
        "deepfleet down\n"
    )
    for s in state.services:
        out.print(f"  {s.replica_id}: {s.url}")


async def _serve(controller: Controller, printer: StatusPrinter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            console.print("already stopping; engines get SIGKILL after their grace period")
            return
        console.print(f"\n{sig.name}: stopping the fleet")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    announced = False

    def on_change(state: FleetState) -> None:
        nonlocal announced
        printer.update(state)
        if not announced and _all_ready(state):
            announced = True
            _print_ready(state)

    controller.subscribe(on_change)
    await controller.run(stop)


def _launcher(cfg: FleetConfig, state_dir: Path) -> Launcher:
    try:
        return build_launcher(cfg, state_dir)
    except LauncherError as exc:
        fail(str(exc))


def _run_foreground(cfg: FleetConfig, state_dir: Path) -> None:
    try:
        lock = acquire_lock(state_dir)
    except FleetAlreadyRunning as exc:
        fail(str(exc))
    try:
        launcher = _launcher(cfg, state_dir)
        try:
            plans = launcher.plans(cfg, _model_paths(cfg))
        except InfeasibleConfig as exc:
            for line in exc.lines:
                console.print(line)
            asyncio.run(launcher.close())
            fail(
                "the config does not fit its cluster (see above); `deepfleet plan -f FILE` explains"
            )
        try:
            store = kv_store_service(cfg, state_dir, plans)
            services = [*([store] if store else []), *ui_services(cfg, state_dir)]
        except (UiSetupError, KvStoreError) as exc:
            asyncio.run(launcher.close())
            fail(str(exc))
        controller = Controller(cfg, state_dir, plans, services=services, launcher=launcher)
        console.print(
            f"starting {len(plans)} replica(s) and the gateway on "
            f"{controller.state.gateway_url}; logs in {state_dir / 'logs'}"
        )
        for line in ui_notes(cfg, state_dir):
            console.print(line)
        asyncio.run(_serve(controller, StatusPrinter(console)))
        console.print("fleet stopped")
    finally:
        lock.close()


def _run_detached(argv: list[str], state_dir: Path, timeout_s: float) -> None:
    """Start `deepfleet up` in its own session, wait until it serves, then return."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "controller.log"
    started = time.time()
    with log.open("ab") as fh:
        child = subprocess.Popen(
            [sys.executable, "-m", "deepfleet", "up", *argv, "--state-dir", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, DETACHED_ENV: "1"},
        )
    with console.status("starting the fleet in the background") as status:
        while True:
            state = current_state(state_dir)
            fresh = state is not None and state.controller_pid == child.pid
            if fresh and state is not None and _all_ready(state):
                break
            if child.poll() is not None:
                fail(f"the fleet stopped during startup (exit {child.returncode}); see {log}")
            if time.time() - started > timeout_s:
                fail(
                    f"not ready after {timeout_s:.0f}s; it keeps starting in the background "
                    f"(pid {child.pid}); see `deepfleet status` and {log}"
                )
            if fresh and state is not None:
                ready = sum(r.state is ReplicaState.READY for r in state.replicas)
                status.update(
                    f"starting the fleet: {ready}/{len(state.replicas)} replicas "
                    f"ready ({time.time() - started:.0f}s)"
                )
            time.sleep(0.5)
    assert state is not None
    _print_ready(state)


def _stop_fleet(state_dir: Path, timeout_s: float) -> bool:
    """SIGTERM the controller, wait, then SIGKILL whatever is left. False if nothing ran."""
    state = current_state(state_dir)
    if state is None:
        return False
    pids = [state.controller_pid]
    # In cluster mode replica pids live on other nodes; Ray and each engine's guard end them.
    local = state.replicas if state.cluster == "local" else []
    groups = [
        p
        for p in (
            state.gateway.pid if state.gateway else None,
            *(r.pid for r in [*local, *state.services]),
        )
        if p
    ]
    if not pid_alive(state.controller_pid) and not any(pid_alive(p) for p in groups):
        return False
    if pid_alive(state.controller_pid):
        os.kill(state.controller_pid, signal.SIGTERM)
    deadline = time.time() + timeout_s
    with console.status("stopping the fleet"):
        while time.time() < deadline and any(pid_alive(p) for p in pids + groups):
            time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            console.print(f"controller {pid} did not stop in {timeout_s:.0f}s: SIGKILL")
            os.kill(pid, signal.SIGKILL)
    for pid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return True


def register(app: typer.Typer) -> None:
    @app.command()
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
    ) -> None:
        """Start the fleet: prepare models, start engines and the gateway, supervise them."""
        cfg = load_config(file)
        if host is not None:
            cfg.gateway.host = host
        if port is not None:
            cfg.gateway.port = port
        cfg.ui.enabled = cfg.ui.enabled or ui
        cfg = pull_fleet_weights(cfg)
        sdir = resolve_state_dir(cfg, state_dir)
        if detach:
            argv = [
                *(["-f", str(file)] if file else []),
                *(["--host", host] if host else []),
                *(["--port", str(port)] if port else []),
                *(["--ui"] if ui else []),
            ]
            _run_detached(argv, sdir, timeout)
            for line in ui_notes(cfg, sdir):
                out.print(line)
        else:
            _run_foreground(cfg, sdir)

    @app.command()
    def down(
        file: Path | None = FILE_OPT,
        state_dir: Path | None = STATE_OPT,
        timeout: float = typer.Option(60, "--timeout", help="Seconds before SIGKILL."),
    ) -> None:
        """Stop the fleet started from this state dir; nothing is left running (in cluster
        mode: its replicas' engines, supervisor actors and placement groups)."""
        sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
        if _stop_fleet(sdir, timeout):
            out.print("fleet stopped")
        else:
            out.print(f"no fleet is running from {sdir}")

    @app.command()
    def status(
        file: Path | None = FILE_OPT,
        state_dir: Path | None = STATE_OPT,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Replicas with state, endpoint, pid, uptime and restarts; in cluster mode also
        each replica's layout, nodes and load, and the cluster's nodes."""
        sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
        state = current_state(sdir)
        if as_json:
            out.print_json(json.dumps(state_json(state)))
            return
        if state is None or not pid_alive(state.controller_pid):
            out.print(f"no fleet is running from {sdir}")
            raise typer.Exit(3)
        out.print(fleet_table(state))
        if state.nodes:
            out.print(nodes_table(state))
