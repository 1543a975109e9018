"""`deepfleet apply -f fleet.yaml`: change the running fleet to a new config, without failing a
request (deepfleet.fleet.changes says what changes, deepfleet.fleet.rollout does it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer

from deepfleet.cli.common import (
    STATE_OPT,
    console,
    current_state,
    fail,
    load_config,
    out,
    resolve_state_dir,
)
from deepfleet.cli.weights_cmd import pull_fleet_weights
from deepfleet.fleet.applied import read_applied
from deepfleet.fleet.changes import ApplyPlan, changes
from deepfleet.fleet.lifecycle import APPLY_SIGNAL
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.rollout import write_request
from deepfleet.fleet.state import ApplyStatus, FleetState


def _print_plan(plan: ApplyPlan, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(plan.to_json()))
    else:
        for line in plan.lines():
            out.print(line)


def _follow(state_dir: Path, generation: int, timeout_s: float) -> ApplyStatus:
    """The controller's progress on apply `generation`, printed step by step, until it ends."""
    shown = 0
    deadline = time.monotonic() + timeout_s
    with console.status(f"apply {generation}: waiting for the controller") as spinner:
        while time.monotonic() < deadline:
            state = current_state(state_dir)
            status = state.apply if state else None
            if status is not None and status.generation == generation:
                for line in status.steps[shown:]:
                    console.print(f"  {line}")
                shown = len(status.steps)
                if status.finished:
                    return status
                if status.steps:
                    spinner.update(f"apply {generation}: {status.steps[-1]}")
            if state is None or not pid_alive(state.controller_pid):
                fail("the fleet's controller exited during the apply; see `deepfleet status`")
            time.sleep(0.3)
    fail(
        f"apply {generation} did not finish in {timeout_s:g}s; it goes on in the controller: "
        f"follow it with `deepfleet status --json` (key `apply`)"
    )


def _running(state_dir: Path) -> FleetState:
    state = current_state(state_dir)
    if state is None or not pid_alive(state.controller_pid):
        fail(f"no fleet is running from {state_dir}; start one with `deepfleet up -f FILE`")
    if state.cluster != "local" and state.cluster != "ray":
        fail(f"cluster mode {state.cluster!r} is changed by re-rendering its bundle")
    return state


def apply(
    file: Path = typer.Option(..., "-f", "--file", help="The changed fleet.yaml."),
    state_dir: Path | None = STATE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    grace: float = typer.Option(
        60, "--grace", min=0, help="Seconds an old replica may take to finish its requests."
    ),
    timeout: float = typer.Option(
        1800, "--timeout", min=1, help="Seconds to wait for the apply to finish."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Change the running fleet to FILE: new replicas start and become ready before old ones
    drain and stop; replica counts and routing change in place. Nothing else is touched."""
    cfg = load_config(file)
    sdir = resolve_state_dir(cfg, state_dir)
    state = _running(sdir)
    applied = read_applied(sdir)
    if applied is None:
        fail(
            f"the fleet running from {sdir} did not record its config (started by an older "
            f"deepfleet): restart it once with `deepfleet down` and `deepfleet up -f {file}`"
        )
    # Hub sources are compared as the cache folders `up` gave the engines (pulled if missing).
    cfg = pull_fleet_weights(cfg)
    plan = changes(applied, cfg)
    if dry_run or not plan.changes_anything:
        _print_plan(plan, as_json)
        return
    if state.apply is not None and not state.apply.finished:
        fail(f"apply {state.apply.generation} is still running; wait for it to finish")
    if not as_json:
        _print_plan(plan, False)
    generation = (state.apply.generation if state.apply else 0) + 1
    write_request(sdir, cfg, generation, grace)
    os.kill(state.controller_pid, APPLY_SIGNAL)
    result = _follow(sdir, generation, timeout)
    if as_json:
        out.print_json(json.dumps({"plan": plan.to_json(), "apply": result.__dict__}))
    if result.phase != "done":
        fail(f"apply {generation} failed: {result.error}")
    if not as_json:
        out.print(f"apply {generation} done")


def register(app: typer.Typer) -> None:
    app.command()(apply)
