"""Finding 13 (local side): the fleet's own Redis store, started by the controller, took any
client. It wants a password (0600 file in the state dir), listens on the configured host
(loopback by default), and the engines get redis://:PASSWORD@host:port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
from pathlib import Path
from typing import cast

import pytest

from deepfleet.config import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.kv_store import kv_store_service
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import ReplicaState
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy


def _resp(port: int, *command: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        parts = [f"*{len(command)}\r\n".encode()]
        parts += [f"${len(c)}\r\n{c}\r\n".encode() for c in command]
        s.sendall(b"".join(parts))
        return s.recv(4096)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server missing")
def test_a_client_without_the_password_gets_noauth(tmp_path: Path) -> None:
    port = free_port()
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "m", "engine": "vllm"}],
            "kv_cache": {"offload": "lmcache", "cpu_gib": 2, "remote": {"kind": "redis",
                                                                          "port": port}},
        }
    )  # fmt: skip
    plans = [ReplicaPlan(cfg.models[0], "m-0", "/models/m", "127.0.0.1", 9000)]
    store = kv_store_service(cfg, tmp_path, plans)
    assert store is not None
    assert "--bind" in store.spec.argv
    assert store.spec.argv[store.spec.argv.index("--bind") + 1] == "127.0.0.1"
    probe = HttpProbe(timeout_s=2)
    sup = Supervisor(
        store.status,
        store.spec,
        store.health_url,
        probe=probe,
        on_change=lambda: None,
        policy=SupervisorPolicy(startup_timeout_s=30, stop_grace_s=5),
    )
    replies: dict[str, bytes] = {}

    async def scenario() -> None:
        task = asyncio.ensure_future(sup.run())
        try:
            for _ in range(600):
                if store.status.state is ReplicaState.READY:
                    break
                await asyncio.sleep(0.05)
            assert store.status.state is ReplicaState.READY
            replies["anonymous"] = _resp(port, "SET", "k", "poisoned")
            assert replies["anonymous"].startswith(b"-NOAUTH"), replies["anonymous"]
            password = (tmp_path / "kv_store_password").read_text().strip()
            replies["auth"] = _resp(port, "AUTH", password)
        finally:
            await sup.stop()
            await task
            await probe.close()

    asyncio.run(scenario())
    assert replies["anonymous"].startswith(b"-NOAUTH"), replies["anonymous"]
    assert replies["auth"] == b"+OK\r\n"
    password_file = tmp_path / "kv_store_password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password not in " ".join(store.spec.argv)  # not on the command line (ps)
    # The engines reach it with the password, through the URL their LMCache connector reads.
    controller = Controller(cfg, tmp_path, plans)
    env = cast(Supervisor, controller.supervisors[0]).spec.env
    assert env["LMCACHE_REMOTE_URL"] == f"redis://:{password}@127.0.0.1:{port}"
