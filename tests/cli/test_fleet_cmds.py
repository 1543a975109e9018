"""`deepfleet up`, `down` and `status` where no engine is needed: their output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.fleet.lifecycle import fleet_lock
from deepfleet.fleet.state import STATE_FILE, FleetState, write_state


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_without_a_fleet(tmp_path: Path) -> None:
    code, out, _ = run("down", "--state-dir", str(tmp_path))
    assert (code, out.strip()) == (0, f"no fleet is running from {tmp_path}")
    code, out, _ = run("status", "--state-dir", str(tmp_path))
    assert (code, out.strip()) == (3, f"no fleet is running from {tmp_path}")
    code, out, _ = run("status", "--json", "--state-dir", str(tmp_path))
    assert code == 0 and json.loads(out) == {"running": False, "replicas": [], "services": []}


def test_a_stale_state_is_not_running(tmp_path: Path) -> None:
    write_state(tmp_path / STATE_FILE, FleetState(dead_pid(), "http://127.0.0.1:1"))
    code, out, _ = run("down", "--state-dir", str(tmp_path))
    assert (code, out.strip()) == (0, f"no fleet is running from {tmp_path}")
    code, out, _ = run("status", "--json", "--state-dir", str(tmp_path))
    assert code == 0 and json.loads(out)["running"] is False


def test_up_refuses_a_second_fleet_on_one_state_dir(tmp_path: Path) -> None:
    write_state(tmp_path / STATE_FILE, FleetState(4242, "http://127.0.0.1:1"))
    with fleet_lock(tmp_path):
        code, _, err = run("up", "--state-dir", str(tmp_path))
    said = " ".join(err.split())
    assert code == 1
    assert f"error: a fleet is already running from {tmp_path} (pid 4242)" in said
    assert "stop it with `deepfleet down`" in said
