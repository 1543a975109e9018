"""The fleet's own shared KV store (kv_cache.remote without `url`): the controller starts it
before the replicas, supervises it like the gateway, and points every replica's LMCache
connector at it. Runs a real Redis (Debian's redis-server, installed by
scripts/setup-test-deps.sh)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from deepfleet.config import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.kv_store import KvStoreError, kv_store_service
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import ReplicaState
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server missing: run scripts/setup-test-deps.sh (apt install redis-server)",
)


def fleet(remote: dict[str, Any], mode: str = "local") -> tuple[FleetConfig, list[ReplicaPlan]]:
    cfg = FleetConfig.model_validate(
        {
            "cluster": {"mode": mode},
            "models": [{"name": "m", "engine": "vllm", "replicas": 2}],
            "kv_cache": {"offload": "lmcache", "cpu_gib": 2, "remote": remote},
        }
    )
    plans = [
        ReplicaPlan(cfg.models[0], f"m-{i}", "/models/m", "127.0.0.1", 9000 + i) for i in range(2)
    ]
    return cfg, plans


def _resp(command: tuple[str, ...]) -> bytes:
    parts = [f"*{len(command)}\r\n".encode()]
    parts += [f"${len(c)}\r\n{c}\r\n".encode() for c in command]
    return b"".join(parts)


def redis(port: int, *command: str, password: str | None = None) -> bytes:
    """One RESP command to the store on loopback (after AUTH with `password`); the raw
    reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if password is not None:
            s.sendall(_resp(("AUTH", password)))
            assert s.recv(4096) == b"+OK\r\n"
        s.sendall(_resp(command))
        return s.recv(4096)


async def until(condition: Any, within_s: float) -> None:
    for _ in range(int(within_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {within_s}s")


@needs_redis
def test_the_controller_starts_redis_first_and_restarts_it(tmp_path: Path) -> None:
    port = free_port()
    cfg, plans = fleet({"kind": "redis", "port": port, "max_gib": 0.25})
    store = kv_store_service(cfg, tmp_path, plans)
    assert store is not None and store.before_replicas
    # Every replica's LMCache connector uses the store as its remote tier.
    controller = Controller(
        cfg,
        tmp_path,
        plans,
        services=[store],
        gateway_spec=LaunchSpec([sys.executable, "-c", "import time; time.sleep(120)"]),
    )
    # With the password the store wants (the state dir's kv_store_password).
    password = (tmp_path / "kv_store_password").read_text().strip()
    url = f"redis://:{password}@127.0.0.1:{port}"
    for runner in controller.supervisors:
        assert cast(Supervisor, runner).spec.env["LMCACHE_REMOTE_URL"] == url
    # The replicas and the gateway are not started here: only the order and the store matter.
    controller.supervisors = []
    status = controller.state.services[0]
    gateway = controller.state.gateway
    assert gateway is not None

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(controller.run(stop))
        try:
            await until(lambda: gateway.started_at is not None, 30)
            # The gateway (and the replicas with it) started only once the store was ready.
            assert status.state is ReplicaState.READY and status.ready_at is not None
            assert gateway.started_at is not None and gateway.started_at >= status.ready_at
            assert redis(port, "PING").startswith(b"-NOAUTH")
            assert redis(port, "PING", password=password) == b"+PONG\r\n"
            maxmemory = redis(port, "CONFIG", "GET", "maxmemory", password=password)
            assert str(int(0.25 * 2**30)).encode() in maxmemory
            assert redis(port, "SET", "k", "v", password=password) == b"+OK\r\n"
            # Killed, it comes back on the same port (empty: it is a cache, not a database).
            assert status.pid is not None
            os.kill(status.pid, signal.SIGKILL)
            await until(lambda: status.restarts == 1 and status.state is ReplicaState.READY, 30)
            assert redis(port, "GET", "k", password=password) == b"$-1\r\n"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        assert status.state is ReplicaState.STOPPED

    asyncio.run(scenario())
    assert "Ready to accept connections" in (tmp_path / "logs" / "kv-store.log").read_text()


@needs_redis
def test_the_tcp_probe_tells_a_listening_store_from_a_closed_port(tmp_path: Path) -> None:
    port = free_port()
    cfg, plans = fleet({"kind": "redis", "port": port})
    store = kv_store_service(cfg, tmp_path, plans)
    assert store is not None and store.health_url == f"tcp://127.0.0.1:{port}"
    probe = HttpProbe(timeout_s=2)
    changes: list[ReplicaState] = []
    sup = Supervisor(
        store.status,
        store.spec,
        store.health_url,
        probe=probe,
        on_change=lambda: changes.append(store.status.state),
        policy=SupervisorPolicy(startup_timeout_s=30, stop_grace_s=5),
    )

    async def scenario() -> None:
        assert not await probe(store.health_url)
        task = asyncio.ensure_future(sup.run())
        await until(lambda: store.status.state is ReplicaState.READY, 30)
        assert await probe(store.health_url)
        await sup.stop()
        await task
        await probe.close()

    asyncio.run(scenario())
    assert changes[:2] == [ReplicaState.STARTING, ReplicaState.READY]


def test_lmcache_server_runs_on_the_engines_python(tmp_path: Path) -> None:
    cfg, plans = fleet({"kind": "lmcache", "port": free_port()})
    plans = [p.__class__(**{**p.__dict__, "python": "/opt/engine/bin/python"}) for p in plans]
    store = kv_store_service(cfg, tmp_path, plans)
    assert store is not None
    assert store.spec.argv[:3] == ["/opt/engine/bin/python", "-m", "lmcache.v1.server"]
    assert store.status.url.startswith("lm://127.0.0.1:")


def test_no_store_without_a_remote_tier_or_with_a_url(tmp_path: Path) -> None:
    cfg, plans = fleet({"kind": "redis", "url": "redis://10.0.0.5:6379"})
    assert kv_store_service(cfg, tmp_path, plans) is None
    cfg.kv_cache.remote = None
    assert kv_store_service(cfg, tmp_path, plans) is None


def test_errors_name_the_field_to_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, plans = fleet({"kind": "lmcache"}, mode="ray")
    with pytest.raises(KvStoreError, match=r"kv_cache\.remote\.host: engines on other nodes"):
        kv_store_service(cfg, tmp_path, plans)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg, plans = fleet({"kind": "lmcache", "port": taken.getsockname()[1]})
        with pytest.raises(KvStoreError, match=r"kv_cache\.remote\.port: .* already in use"):
            kv_store_service(cfg, tmp_path, plans)
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg, plans = fleet({"kind": "redis", "port": free_port()})
    with pytest.raises(KvStoreError, match=r"kv_cache\.remote\.kind: redis needs redis-server"):
        kv_store_service(cfg, tmp_path, plans)


def test_max_gib_is_only_for_redis() -> None:
    with pytest.raises(ValueError, match="max_gib"):
        fleet({"kind": "lmcache", "max_gib": 1})
