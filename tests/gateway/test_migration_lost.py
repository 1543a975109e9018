"""A replica the fleet state shows lost (its node dead, it restarting, it gone): the gateway
cuts its connections, so its streams migrate at once (reason `lost`) instead of waiting out
the stall deadline, and a request still waiting for its first byte goes to another replica."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from deepfleet.fleet.state import FleetState, NodeStatus, ReplicaState, ReplicaStatus, write_state
from deepfleet.gateway.lost import lost, serving
from tests.gateway.test_migration import (  # noqa: F401 - mrig is a fixture
    MODEL,
    MSG,
    MRig,
    metric,
    mrig,
    parts,
    reference,
    stream,
)

URL = "http://10.0.0.2:8000"


def _state(*replicas: ReplicaStatus, dead: str | None = None) -> FleetState:
    nodes = [NodeStatus(dead, dead, False)] if dead else []
    return FleetState(controller_pid=1, gateway_url="", replicas=list(replicas), nodes=nodes)


def _replica(state: ReplicaState = ReplicaState.READY, url: str = URL) -> ReplicaStatus:
    return ReplicaStatus("m-0", "m", "vllm", url, state, node="10.0.0.2", nodes=["10.0.0.2"])


LOST_CASES = [
    ("still ready", _state(_replica()), {}),
    ("unhealthy: the stall deadline decides", _state(_replica(ReplicaState.UNHEALTHY)), {}),
    ("restarting", _state(_replica(ReplicaState.RESTARTING)), {"m-0": URL}),
    ("starting again", _state(_replica(ReplicaState.STARTING)), {"m-0": URL}),
    ("stopping", _state(_replica(ReplicaState.STOPPING)), {"m-0": URL}),
    ("failed", _state(_replica(ReplicaState.FAILED)), {"m-0": URL}),
    ("gone from the file", _state(), {"m-0": URL}),
    ("moved to another address", _state(_replica(url="http://10.0.0.3:8000")), {"m-0": URL}),
    ("its node is dead", _state(_replica(), dead="10.0.0.2"), {"m-0": URL}),
]


@pytest.mark.parametrize(("_", "after", "expected"), LOST_CASES, ids=[c[0] for c in LOST_CASES])
def test_lost(_: str, after: FleetState, expected: dict[str, str]) -> None:
    before = serving(_state(_replica()))
    assert before == {"m-0": URL}
    assert lost(before, after) == expected


def test_a_replica_that_was_not_serving_is_never_lost() -> None:
    before = serving(_state(_replica(ReplicaState.STARTING)))
    assert lost(before, _state()) == {}


async def _on_one_replica(rig: MRig) -> str:
    """The replica whose stream the fake engine holds stalled (its fault was taken)."""
    for _ in range(500):
        busy = [r for r, n in rig.gateway.table.in_flight.items() if n > 0]
        if busy and rig.ctl.fail_times == 0:
            return busy[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no stream stalled on a replica")


def _mark(rig: MRig, replica_id: str, how: str) -> None:
    """Write the state the controller would write when `replica_id` is lost `how`."""
    state = rig.gateway.table.follower.state
    assert state is not None
    state = replace(state, replicas=list(state.replicas), nodes=[])
    i = next(i for i, r in enumerate(state.replicas) if r.replica_id == replica_id)
    if how == "restarting":
        state.replicas[i] = replace(state.replicas[i], state=ReplicaState.RESTARTING)
    elif how == "node dead":
        state.replicas[i] = replace(state.replicas[i], node="n2", nodes=["n2"])
        state.nodes = [NodeStatus("n2", "n2", False)]
    else:
        del state.replicas[i]
    write_state(rig.gateway.table.path, state)
    rig.gateway.table.refresh()


@pytest.mark.parametrize("how", ["restarting", "node dead", "gone"])
@pytest.mark.parametrize("mrig", [{"stall_timeout_s": 30.0}], indirect=True)
async def test_a_lost_replicas_stream_moves_before_the_stall_deadline(
    mrig: MRig,  # noqa: F811
    how: str,
) -> None:
    body = {"messages": MSG, "temperature": 0}
    ref = await reference(mrig, "/v1/chat/completions", body)
    mrig.ctl.fail = "stall"
    started = time.monotonic()
    task = asyncio.create_task(stream(mrig, "/v1/chat/completions", body))
    victim = await _on_one_replica(mrig)
    _mark(mrig, victim, how)
    got = await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 10  # not the 30 s stall deadline
    assert parts(got)[1] == parts(ref)[1]
    assert got[-1] == "[DONE]"
    assert await metric(mrig, f'deepfleet_migrations_total{{model="{MODEL}",reason="lost"}}') == 1
    assert await metric(mrig, "deepfleet_migrations_total") == 1
    assert all(n == 0 for n in mrig.gateway.table.in_flight.values())


async def test_a_request_waiting_for_its_first_byte_goes_elsewhere(mrig: MRig) -> None:  # noqa: F811
    """A completion stream whose engine stalls before its first event (the gateway's read
    timeout here is 5 s): the lost replica's request is retried on another one."""
    ref = await reference(mrig, "/v1/completions", {"prompt": "count"})
    mrig.ctl.fail, mrig.ctl.fail_after = "stall", 0
    before = [e.requests for e in mrig.engines]
    started = time.monotonic()
    task = asyncio.create_task(stream(mrig, "/v1/completions", {"prompt": "count"}))
    for _ in range(500):
        if mrig.ctl.fail_times == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    state = mrig.gateway.table.follower.state
    assert state is not None
    busy = [e.url for e, n in zip(mrig.engines, before, strict=True) if e.requests > n]
    victim = next(r.replica_id for r in state.replicas if r.url in busy)
    _mark(mrig, victim, "restarting")
    got = await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 4
    assert parts(got)[1] == parts(ref)[1]
    assert await metric(mrig, "deepfleet_migrations_total") == 0  # a retry, not a migration
    assert await metric(mrig, "deepfleet_upstream_retries_total") == 1
