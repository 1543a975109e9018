"""Passive ejection: growing backoff, half-open probe, reset on success or restart."""

from __future__ import annotations

from pathlib import Path

from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus
from deepfleet.routing.endpoints import EndpointTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def table(restarts: int = 0) -> tuple[EndpointTable, Clock, FleetState]:
    clock = Clock()
    t = EndpointTable(Path("/nonexistent"), eject_base_s=1.0, eject_max_s=4.0, clock=clock)
    state = FleetState(
        1,
        "http://gw",
        models=[ModelRoute("m", "round_robin")],
        replicas=[
            ReplicaStatus(
                f"m-{i}", "m", "fake", f"http://e{i}", ReplicaState.READY, restarts=restarts
            )
            for i in range(2)
        ],
    )
    t.load(state)
    return t, clock, state


def ids(t: EndpointTable) -> list[str]:
    return [e.replica_id for e in t.ready("m")]


def test_backoff_doubles_and_caps() -> None:
    t, _, _ = table()
    assert [t.eject("m-0") for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]


def test_half_open_offers_one_probe_then_success_clears() -> None:
    t, clock, _ = table()
    t.eject("m-0")
    assert ids(t) == ["m-1"]
    clock.now += 1.01
    assert ids(t) == ["m-0", "m-1"]  # the probe
    assert ids(t) == ["m-1"]  # only one probe at a time
    t.succeeded("m-0")
    assert ids(t) == ["m-0", "m-1"]


def test_failed_probe_ejects_for_longer() -> None:
    t, clock, _ = table()
    t.eject("m-0")
    clock.now += 1.01
    assert "m-0" in ids(t)
    assert t.eject("m-0") == 2.0
    clock.now += 1.5
    assert ids(t) == ["m-1"]


def test_unused_probe_is_released() -> None:
    t, clock, _ = table()
    t.eject("m-0")
    clock.now += 1.01
    assert "m-0" in ids(t)
    t.release_probe("m-0")
    assert "m-0" in ids(t)


def test_restart_clears_ejection() -> None:
    t, _, state = table()
    t.eject("m-0")
    for r in state.replicas:
        r.restarts = 1
    t.load(state)
    assert ids(t) == ["m-0", "m-1"]
