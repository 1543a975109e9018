"""Finding 8's other side: a gateway on a non-loopback host without `gateway.metrics_token`
generates one into the state dir (tests/security/test_metrics_open_on_the_network.py), and
`deepfleet render monitoring` did not know it, so the Prometheus it configured got 401 on
/sd/targets and /metrics and saw no fleet at all. Now the rendered config carries the state
dir's token (0600 beside prometheus.yml), and a real Prometheus scrapes the real gateway."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import (
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)
from deepfleet.gateway.keys import KeyStore
from tests.e2e.conftest import cli
from tests.helpers.processes import spawn, stop, wait_http


def _wait_health(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.2)


@pytest.fixture
def exposed_gateway(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A gateway on 0.0.0.0 (an API key exists) with no metrics token in its config."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = ReplicaStatus("gateway", "*", "gateway", url, ReplicaState.READY)
    state = FleetState(1, url, models=[ModelRoute("m", "round_robin")], gateway=gateway)
    write_state(state_dir / "fleet.json", state)
    keys = KeyStore(state_dir / "keys.db")
    keys.create("client")
    keys.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfleet.gateway", "--state-file", str(state_dir / "fleet.json"),
         "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_health(f"http://127.0.0.1:{port}", proc)
        yield state_dir, port
    finally:
        proc.terminate()
        proc.wait(10)


def test_rendered_prometheus_scrapes_a_gateway_with_a_generated_token(
    tmp_path: Path, exposed_gateway: tuple[Path, int]
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed: scripts/setup-test-deps.sh installs it")
    state_dir, port = exposed_gateway
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(url + "/sd/targets", timeout=5).status_code == 401  # it wants a token
    config = {"models": [{"name": "m"}], "gateway": {"host": "0.0.0.0", "port": port},
              "state_dir": str(state_dir)}  # fmt: skip
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "monitoring"
    rendered = cli("render", "monitoring", "-f", str(tmp_path / "fleet.yaml"), "-o", str(out))
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr

    token = out / "metrics_token"
    assert token.is_file(), "the rendered Prometheus has no token for the gateway"
    assert token.read_text().strip() == (state_dir / "metrics_token").read_text().strip()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600

    prom_port = free_port()
    prom = spawn([prometheus, f"--config.file={out / 'prometheus.yml'}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn",
                  "--web.enable-lifecycle"], tmp_path / "prometheus.log")  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready", timeout=60)
        health: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and health.get("deepfleet-gateway") != "up":
            time.sleep(1)
            r = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=10)
            health = {t["labels"]["job"]: t["health"] for t in r.json()["data"]["activeTargets"]}
        # The gateway's target comes from /sd/targets and is scraped on /metrics: both with
        # the token.
        assert health.get("deepfleet-gateway") == "up", health
    finally:
        stop(prom)
