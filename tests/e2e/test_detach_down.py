"""`deepfleet up --detach` returns once the fleet serves; `deepfleet down` stops all of it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil
import pytest

from deepfleet.fleet.ports import free_port
from tests.e2e.conftest import MODEL, START_TIMEOUT_S, cli, status_json

pytestmark = pytest.mark.slow


def test_detach_then_down(tmp_path: Path) -> None:
    port = free_port()
    up = cli(
        "up",
        "--detach",
        "--state-dir",
        str(tmp_path),
        "--port",
        str(port),
        timeout=START_TIMEOUT_S + 60,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"http://127.0.0.1:{port}/v1" in up.stdout
    st = status_json(tmp_path)
    assert st["running"] is True
    controller = psutil.Process(int(st["controller_pid"]))  # type: ignore[call-overload]
    tree = {p.pid for p in controller.children(recursive=True)} | {controller.pid}
    assert len(tree) >= 4
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        timeout=60,
        json={
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 3,
            "temperature": 0,
        },
    )
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["text"]
    # The engine's own port refuses the same request without the fleet's engine key (only
    # the gateway holds it), and never shows the key on its command line.
    engine = st["replicas"][0]  # type: ignore[index]
    direct = httpx.post(
        engine["endpoint"] + "/v1/completions",
        timeout=60,
        json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 3},
    )
    assert direct.status_code == 401, direct.text
    key = (tmp_path / "engine_api_key").read_text().strip()
    assert key not in " ".join(psutil.Process(int(engine["pid"])).cmdline())
    # A second `up` on the same state dir is refused with a clear message.
    again = cli("up", "--state-dir", str(tmp_path), "--port", str(free_port()))
    assert again.returncode == 1 and "already running" in again.stderr
    down = cli("down", "--state-dir", str(tmp_path), timeout=120)
    assert down.returncode == 0 and "fleet stopped" in down.stdout
    time.sleep(0.5)
    alive = [
        p
        for p in tree
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    assert cli("down", "--state-dir", str(tmp_path)).stdout.startswith("no fleet is running")
