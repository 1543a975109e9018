"""One follower of fleet.json: re-read only when it changed, every listener told in order."""

from __future__ import annotations

import os
from pathlib import Path

from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus, write_state
from deepfleet.routing.follow import StateFollower, event_ports


def state(*ports: int | None) -> FleetState:
    replicas = [
        ReplicaStatus(f"m-{i}", "m", "vllm", f"http://e{i}", ReplicaState.READY, kv_events_port=p)
        for i, p in enumerate(ports)
    ]
    return FleetState(1, "", replicas=replicas)


def test_listeners_hear_each_change_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    follower = StateFollower(path)
    heard: list[tuple[str, int]] = []
    follower.listen(lambda s: heard.append(("table", len(s.replicas))))
    follower.listen(lambda s: heard.append(("router", len(s.replicas))))
    assert not follower.poll() and follower.state is None  # no file yet
    write_state(path, state(None))
    assert follower.poll() and not follower.poll()
    write_state(path, state(None, None))
    os.utime(path, ns=(1, 10**18))  # a distinct mtime, however coarse the filesystem's clock
    assert follower.poll()
    assert heard == [("table", 1), ("router", 1), ("table", 2), ("router", 2)]
    path.write_text("{half a file")
    os.utime(path, ns=(1, 2 * 10**18))
    assert not follower.poll() and follower.state is not None  # the last good state stays


def test_event_ports_lists_the_replicas_that_publish(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    ports = event_ports(path, "0.0.0.0")
    assert ports() == {}
    write_state(path, state(5557, None))
    assert ports() == {"m-0": ("tcp://0.0.0.0:5557", 0, False)}


def test_event_ports_gives_a_replicas_recorded_socket(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    ports = event_ports(path)
    recorded = state(5557, 5558, 41234)
    recorded.replicas[0].kv_events_endpoint = f"ipc://{tmp_path}/kv-5557.ipc"
    ray_placed = recorded.replicas[2]  # its engine bound its node's IP (fleet/ray/actor.py)
    ray_placed.kv_events_endpoint, ray_placed.kv_events_bound = "tcp://10.0.0.2:41234", True
    write_state(path, recorded)
    assert {r: (s.endpoint, s.bound) for r, s in ports().items()} == {
        "m-0": (f"ipc://{tmp_path}/kv-5557.ipc", False),
        "m-1": ("tcp://127.0.0.1:5558", False),  # the engine connects: the relay binds
        "m-2": ("tcp://10.0.0.2:41234", True),  # the relay connects
    }


def test_a_second_write_in_the_same_clock_tick_is_seen(tmp_path: Path) -> None:
    """Linux stamps mtimes from a coarse clock: "starting" then "ready" written within one
    tick can leave the same mtime, inode and size. The follower compares the bytes while the
    file is recent (a gateway test once saw the ready replica as unavailable)."""
    path = tmp_path / "fleet.json"
    follower = StateFollower(path)
    starting = state(None)
    starting.replicas[0].state = ReplicaState.STARTING
    write_state(path, starting)
    assert follower.poll()
    stamp = os.stat(path).st_mtime_ns
    ready = path.read_text().replace('"starting"', '"ready"   ')  # the same size, in place
    assert len(ready) == os.stat(path).st_size
    path.write_text(ready)
    os.utime(path, ns=(stamp, stamp))
    assert follower.poll()
    assert follower.state is not None and follower.state.replicas[0].state is ReplicaState.READY
    assert not follower.poll()  # read again while recent, but unchanged: no listener call
