"""A request for a model with no ready replica waits while one is coming (starting,
restarting, or ejected for now) and gets it; it does not wait when none is coming."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from deepfleet.fleet.state import (
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)
from deepfleet.routing.endpoints import EndpointTable


def publish(path: Path, *states: ReplicaState, draining: bool = False) -> None:
    replicas = [
        ReplicaStatus(f"m-{i}", "m", "vllm", f"http://127.0.0.1:{9000 + i}", s, draining=draining)
        for i, s in enumerate(states)
    ]
    write_state(path, FleetState(1, "http://gw", [ModelRoute("m", "round_robin")], replicas))


async def refreshing(table: EndpointTable, stop: asyncio.Event) -> None:
    """What the gateway does: re-read the state file every 0.2 s."""
    while not stop.is_set():
        table.refresh()
        await asyncio.sleep(0.2)


def test_waits_for_a_starting_replica_and_gets_it(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    publish(path, ReplicaState.STARTING)
    table = EndpointTable(path)
    table.refresh()
    assert table.ready("m") == [] and table.may_become_ready("m")

    async def main() -> tuple[list[str], float]:
        stop = asyncio.Event()
        refresher = asyncio.create_task(refreshing(table, stop))
        started = time.monotonic()
        waiter = asyncio.create_task(table.wait_ready("m", 10))
        await asyncio.sleep(0.5)
        publish(path, ReplicaState.READY)
        got = await waiter
        stop.set()
        await refresher
        return [e.replica_id for e in got], time.monotonic() - started

    ids, waited = asyncio.run(main())
    assert ids == ["m-0"] and 0.4 < waited < 2.0


def test_no_wait_when_nothing_is_coming(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    for states, draining in (((ReplicaState.FAILED,), False), ((ReplicaState.READY,), True)):
        publish(path, *states, draining=draining)
        table = EndpointTable(path)
        table.refresh()
        assert not table.may_become_ready("m") and not table.may_become_ready("other")
        started = time.monotonic()
        assert asyncio.run(table.wait_ready("m", 10)) == []
        assert time.monotonic() - started < 0.5


def test_a_wait_ends_at_its_timeout_or_when_the_client_leaves(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    publish(path, ReplicaState.RESTARTING)
    table = EndpointTable(path)
    table.refresh()
    started = time.monotonic()
    assert asyncio.run(table.wait_ready("m", 0.3)) == []
    assert 0.3 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    assert asyncio.run(table.wait_ready("m", 10, gone=lambda: True)) == []
    assert time.monotonic() - started < 0.5


def test_an_ejected_ready_replica_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    publish(path, ReplicaState.READY)
    table = EndpointTable(path, eject_base_s=0.3)
    table.refresh()
    table.eject("m-0")
    assert table.ready("m") == [] and table.may_become_ready("m")
    got = asyncio.run(table.wait_ready("m", 5))
    assert [e.replica_id for e in got] == ["m-0"]  # offered again once its ejection ends
