"""Gateways on other hosts follow the fleet state through PostgreSQL (gateway.state.share_fleet):
the controller copies its state dir's shared files into the database (store/fleet_share.py),
a remote gateway writes them into a dir of its own (store/fleet_mirror.py) and routes from it
(gateway/remote.py). Real PostgreSQL, real gateway processes, fake engines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import yaml

from deepfleet.cli.fleet_cmds import _key_check
from deepfleet.config import FleetConfig
from deepfleet.config.kvcache import KV_ROUTING_FILE, KvRoutingSpec
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.files import ENGINE_KEY_FILE
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import (
    STATE_FILE,
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    read_state,
    write_state,
)
from deepfleet.gateway.store.fleet_mirror import FleetMirror
from deepfleet.gateway.store.fleet_share import FleetSharer, fleet_sharer
from deepfleet.gateway.store.postgres_conn import connect
from deepfleet.gateway.store.postgres_fleet import put
from deepfleet.gateway.store.postgres_keys import PostgresKeys
from tests.helpers.fake_fleet import FakeEngineLauncher, serving, stream_once
from tests.helpers.postgres import Postgres
from tests.helpers.processes import spawn, stop
from tests.kvcache.events_util import IpcEngine, stored

DSN_ENV = "TEST_SHARE_DSN"


def _write_state(path: Path, replicas: int) -> None:
    state = FleetState(controller_pid=1, gateway_url="http://head:8000")
    state.replicas = [
        ReplicaStatus(f"m-{i}", "m", "vllm", f"http://10.0.0.{i}:8001", ReplicaState.READY)
        for i in range(replicas)
    ]
    write_state(path / STATE_FILE, state)


def test_mirror_follows_what_the_sharer_copies(pg: Postgres, tmp_path: Path) -> None:
    head, remote = tmp_path / "head", tmp_path / "remote"
    head.mkdir()
    _write_state(head, 1)
    (head / ENGINE_KEY_FILE).write_text("engine-secret\n")
    sharer = FleetSharer(pg.dsn, head)
    assert sharer.share_once() == 2
    assert sharer.share_once() == 0  # unchanged files get no new version
    mirror = FleetMirror(pg.dsn, remote, poll_s=0.05)
    assert mirror.sync_once() == 2
    assert mirror.sync_once() == 0
    for name in (STATE_FILE, ENGINE_KEY_FILE):
        assert (remote / name).read_text() == (head / name).read_text()
        assert (remote / name).stat().st_mode & 0o777 == 0o600
    # A row under any other name (the database is shared) never becomes a path.
    with connect(pg.dsn) as conn:
        put(conn, {"../escape": "x", "gateway.json": "{}"})
    assert mirror.sync_once() == 0
    assert not (tmp_path / "escape").exists() and not (remote / "gateway.json").exists()
    # A database restored from an older backup (versions behind the mirror's) is taken whole.
    with connect(pg.dsn) as conn:
        conn.execute("TRUNCATE fleet_files")
        conn.execute("ALTER SEQUENCE fleet_files_version RESTART")
        put(conn, {ENGINE_KEY_FILE: "rotated\n"})
    assert mirror.sync_once() == 1 and (remote / ENGINE_KEY_FILE).read_text() == "rotated\n"
    assert sharer.share_once() == 2  # the controller's next copy puts its files back
    assert mirror.sync_once() == 2
    assert (remote / ENGINE_KEY_FILE).read_text() == (head / ENGINE_KEY_FILE).read_text()

    # Live: the controller's listener wakes the sharer's thread; the mirror's thread follows.
    sharer.start()
    mirror.start()
    try:
        _write_state(head, 3)
        sharer(FleetState(controller_pid=1, gateway_url=""))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            copied = read_state(remote / STATE_FILE)
            if copied is not None and len(copied.replicas) == 3:
                break
            time.sleep(0.05)
        copied = read_state(remote / STATE_FILE)
        assert copied is not None and [r.replica_id for r in copied.replicas] == [
            "m-0",
            "m-1",
            "m-2",
        ]
    finally:
        mirror.stop()
        sharer.stop()


def test_mirror_waits_for_the_state_and_says_why(pg: Postgres, tmp_path: Path) -> None:
    mirror = FleetMirror(pg.dsn, tmp_path / "remote", poll_s=0.01)
    heard: list[str] = []
    assert not mirror.wait_first(0.3, heard.append)
    assert heard and "share_fleet" in heard[0]
    down = FleetMirror(
        "postgresql://nobody@127.0.0.1:1/x", tmp_path / "down", poll_s=0.01
    )  # nothing listens there
    heard.clear()
    assert not down.wait_first(0.3, heard.append)
    assert heard and "cannot connect" in heard[0] and "nobody" in heard[0]


def test_remote_gateway_refuses_a_config_it_cannot_follow(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "tiny"}]}))
    done = subprocess.run(
        [sys.executable, "-m", "deepfleet.gateway.remote", "-f", str(config),
         "--state-dir", str(tmp_path / "gw")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "gateway.state.backend: a gateway on another host shares keys" in done.stderr


def test_a_remote_gateway_routes_from_the_shared_state(
    pg: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A controller (fake engines, its own gateway) with share_fleet, and a gateway process
    with a state dir of its own: the remote one authenticates with the keys in PostgreSQL,
    routes to the engines the controller runs, and follows a replica's removal."""
    monkeypatch.setenv(DSN_ENV, pg.dsn)
    state = {"backend": "postgres", "dsn_env": DSN_ENV, "share_fleet": True}
    data = {
        "models": [{"name": "tiny", "replicas": 2}],
        "gateway": {"port": free_port(), "state": state},
    }
    cfg = FleetConfig.model_validate(data)
    keys = PostgresKeys(pg.dsn)
    _, secret = keys.create("alice")
    keys.close()
    launcher = FakeEngineLauncher(tokens=3, delay_s=0.01)
    head, remote = tmp_path / "head", tmp_path / "remote"
    controller = Controller(cfg, head, launcher.plans(cfg, {}), launcher=launcher)
    port = free_port()
    remote_cfg = tmp_path / "fleet.yaml"
    remote_cfg.write_text(yaml.safe_dump({**data, "gateway": {**data["gateway"], "port": port}}))
    url = f"http://127.0.0.1:{port}"

    async def ready_counts(client: httpx.AsyncClient) -> dict[str, int] | None:
        try:
            r = await client.get(url + "/ready", timeout=2)
        except httpx.HTTPError:
            return None
        counts: dict[str, int] = r.json()["models"]
        return counts

    async def main() -> None:
        gw = None
        try:
            async with serving(controller, sharer=fleet_sharer(cfg.gateway.state, head)):
                gw = spawn(
                    [sys.executable, "-m", "deepfleet.gateway.remote", "-f", str(remote_cfg),
                     "--state-dir", str(remote), "--wait-s", "30"],
                    tmp_path / "remote.log",
                )  # fmt: skip
                async with httpx.AsyncClient() as client:
                    await exercise(client)

            async def stopping() -> bool:  # the controller's last state reached it too
                shared = read_state(remote / STATE_FILE)
                return shared is not None and shared.stopping

            assert await _until(stopping, 5), _log(tmp_path)
        finally:
            if gw is not None:
                stop(gw)

    async def exercise(client: httpx.AsyncClient) -> None:
        seen: dict[str, int] | None = None

        async def both_ready() -> bool:
            nonlocal seen
            seen = await ready_counts(client)
            return seen == {"tiny": 2}

        assert await _until(both_ready, 30), (seen, _log(tmp_path))
        r = await client.post(
            url + "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 401  # the keys are the database's
        client.headers["authorization"] = f"Bearer {secret}"
        for _ in range(4):
            assert await stream_once(client, url) == "ok"
        await controller.remove_replica("tiny-1")

        async def one_left() -> bool:
            return await ready_counts(client) == {"tiny": 1}

        assert await _until(one_left, 5), _log(tmp_path)
        assert await stream_once(client, url) == "ok"

    asyncio.run(main())
    assert "Traceback" not in _log(tmp_path)
    assert (remote / ENGINE_KEY_FILE).read_text() == (head / ENGINE_KEY_FILE).read_text()


async def _until(check: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


def _log(tmp: Path) -> str:
    path = tmp / "remote.log"
    return path.read_text()[-2000:] if path.exists() else ""


def test_a_remote_gateway_follows_the_kv_events_over_the_relays_tcp(
    pg: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kv_cache.routing.relay_tcp`: the node relay (a real process) publishes the engines'
    KV events on TCP as well, and a remote gateway (a real process, state from PostgreSQL)
    learns the blocks an engine announced before it started (the relay's snapshot, over
    TCP) and those announced after (the live stream)."""
    monkeypatch.setenv(DSN_ENV, pg.dsn)
    head, remote = tmp_path / "head", tmp_path / "remote"
    head.mkdir()
    events_port, relay_port, port = free_port(), free_port(), free_port()
    engine = IpcEngine(head / f"kv-{events_port}.ipc")
    state = FleetState(controller_pid=1, gateway_url="", models=[ModelRoute("m", "kv_aware")])
    state.replicas = [
        ReplicaStatus("m-0", "m", "vllm", "http://127.0.0.1:9", ReplicaState.READY,
                      kv_events_port=events_port, kv_events_endpoint=engine.endpoint)
    ]  # fmt: skip
    write_state(head / STATE_FILE, state)
    routing = KvRoutingSpec(relay_tcp=f"127.0.0.1:{relay_port}")
    (head / KV_ROUTING_FILE).write_text(routing.model_dump_json())
    relay = spawn(
        [sys.executable, "-m", "deepfleet.routing.node_relay", "--state-file",
         str(head / STATE_FILE)],
        tmp_path / "relay.log",
    )  # fmt: skip
    config = {
        "models": [{"name": "m", "routing": "kv_aware"}],
        "gateway": {"port": port, "state": {"backend": "postgres", "dsn_env": DSN_ENV,
                                            "share_fleet": True}},
    }  # fmt: skip
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    gw = None
    try:
        FleetSharer(pg.dsn, head).share_once()
        time.sleep(1.5)  # the relay subscribes to the engine on its first refresh
        engine.publish(stored([11, 12], None, range(8)))  # before the remote gateway exists
        gw = spawn(
            [sys.executable, "-m", "deepfleet.gateway.remote", "-f", str(tmp_path / "fleet.yaml"),
             "--state-dir", str(remote), "--wait-s", "30"],
            tmp_path / "remote.log",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        assert _poll(lambda: index_blocks(url) == 2, 30), _log(tmp_path)
        engine.publish(stored([13], 12, range(8, 12)))
        assert _poll(lambda: index_blocks(url) == 3, 10), _log(tmp_path)
    finally:
        for proc in (gw, relay):
            if proc is not None:
                stop(proc)
        engine.close()
    assert "Traceback" not in _log(tmp_path)


def index_blocks(url: str) -> float | None:
    """The gateway's KV index size, from its /metrics."""
    try:
        text = httpx.get(url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("deepfleet_kv_index_blocks"):
            return float(line.split()[-1])
    return None


def _poll(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_haproxys_bind_check_reads_the_configured_backend(
    pg: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` lets HAProxy (gateway.instances) bind a non-loopback host once an API key exists:
    in PostgreSQL when that is the backend (it read only SQLite)."""
    monkeypatch.setenv(DSN_ENV, pg.dsn)
    state = {"backend": "postgres", "dsn_env": DSN_ENV}
    cfg = FleetConfig.model_validate({"models": [{"name": "m"}], "gateway": {"state": state}})
    has_keys = _key_check(cfg)
    assert not has_keys(tmp_path / "keys.db")
    keys = PostgresKeys(pg.dsn)
    keys.create("alice")
    keys.close()
    assert has_keys(tmp_path / "keys.db")
    assert not _key_check(FleetConfig.model_validate({"models": [{"name": "m"}]}))(
        tmp_path / "keys.db"
    )
