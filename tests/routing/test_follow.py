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
    assert ports() == {"m-0": "tcp://0.0.0.0:5557"}
