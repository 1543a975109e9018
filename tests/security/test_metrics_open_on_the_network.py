"""Attack: a gateway published on a non-loopback address without `gateway.metrics_token`
serves /metrics (API key names, models, load) and /sd/targets (every engine's address) to
anyone who reaches it. Now such a gateway generates a token (0600 in the state dir) and both
answer 401 without it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import FleetState, ModelRoute, write_state
from deepfleet.gateway.keys import KeyStore


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exposed")


@pytest.fixture(scope="module")
def exposed_gateway(state_dir: Path) -> Iterator[str]:
    tmp_path = state_dir
    state = tmp_path / "fleet.json"
    write_state(state, FleetState(1, "", models=[ModelRoute("m", "round_robin")]))
    keys = KeyStore(tmp_path / "keys.db")
    keys.create("client")  # with a key, the gateway serves on the address it was given
    keys.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepfleet.gateway", "--state-file", str(state),
         "--host", "0.0.0.0", "--port", str(port)],
        env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("path", ["/metrics", "/sd/targets", "/metrics/fleet"])
def test_metrics_and_targets_need_a_token_off_loopback(
    exposed_gateway: str, state_dir: Path, path: str
) -> None:
    assert httpx.get(exposed_gateway + path, timeout=5).status_code == 401
    token_file = state_dir / "metrics_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(exposed_gateway + path, headers=auth, timeout=5).status_code == 200
