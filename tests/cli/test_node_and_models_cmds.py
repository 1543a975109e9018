"""`deepfleet node start` and `models prepare`: refusals, and the dry run's command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from deepfleet.cli import node_cmd
from deepfleet.cli.main import app
from deepfleet.fleet.ray.records import NodeRecord


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, " ".join(r.stderr.split())


@pytest.mark.parametrize("args", [[], ["--head", "--join", "10.0.0.1:6379"]])
def test_node_start_needs_exactly_one_role(args: list[str]) -> None:
    code, _, err = run("node", "start", *args)
    assert code == 2 and "give exactly one of --head or --join HEAD:PORT" in err


def test_node_start_refuses_an_interface_without_an_address(tmp_path: Path) -> None:
    code, _, err = run("node", "start", "--head", "--interface", "nosuchnic0",
                       "--state-dir", str(tmp_path))  # fmt: skip
    assert code == 2 and "interface 'nosuchnic0' has no IPv4 address" in err


def test_node_start_dry_run_prints_the_command(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    code, out, _ = run("node", "start", "--head", "--node-ip", "10.0.0.1", "--no-auth",
                       "--dry-run", "--state-dir", str(tmp_path))  # fmt: skip
    env, argv = out.strip().splitlines()
    assert code == 0 and "VLLM_HOST_IP=10.0.0.1" in env
    assert " start --head --port=6379 --node-ip-address=10.0.0.1 " in argv
    assert not (tmp_path / "ray-node.json").exists()


def test_node_start_refuses_while_its_node_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_start(*args: object) -> None:
        raise AssertionError("ray start ran")

    monkeypatch.setattr(node_cmd, "start_node", must_not_start)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as node:
        try:
            created = psutil.Process(node.pid).create_time()
            NodeRecord("head", "10.0.0.1:6379", "10.0.0.1", "/tmp/ray",
                       processes=[(node.pid, created)]).save(tmp_path)  # fmt: skip
            code, _, err = run("node", "start", "--head", "--node-ip", "10.0.0.1", "--no-auth",
                               "--state-dir", str(tmp_path))  # fmt: skip
        finally:
            node.kill()
    assert code == 1
    assert f"a Ray head node started by deepfleet runs from {tmp_path} (10.0.0.1:6379)" in err


def test_node_stop_without_a_node(tmp_path: Path) -> None:
    code, out, _ = run("node", "stop", "--state-dir", str(tmp_path))
    assert code == 0 and out.startswith(f"no Ray node started by deepfleet from {tmp_path}")


def test_models_prepare_only_knows_the_bundled_model() -> None:
    code, _, err = run("models", "prepare", "other")
    assert code == 1 and "only `bundled` can be prepared here; for 'other'" in err
