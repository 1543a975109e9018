"""A new controller takes over a detached supervisor actor's status (fleet/ray/detached.py):
the engine keeps serving, and the gateways keep its KV events endpoint, which the actor holds
(a new controller cannot learn it otherwise without asking the engine again)."""

from __future__ import annotations

from deepfleet.fleet.ray.actor import record_events
from deepfleet.fleet.ray.detached import AdoptedHost
from deepfleet.fleet.ray.launcher import MIRRORED
from deepfleet.fleet.ray.survivors import HostIdentity
from deepfleet.fleet.state import ReplicaState, ReplicaStatus


def test_an_adopted_engine_keeps_its_kv_events_endpoint() -> None:
    held = ReplicaStatus("m-0", "m", "vllm", "http://10.0.0.2:8001", ReplicaState.READY, pid=7)
    record_events(held, "tcp://10.0.0.2:41234")
    host = AdoptedHost(
        actor=None, name="fleet-x/m-0/1.abc", identity=HostIdentity(held, True, "n2"),
        group=None, nodes=["10.0.0.2"], restarts=0,
    )  # fmt: skip
    fresh = ReplicaStatus("m-0", "m", "vllm", "")  # what the new controller starts from
    host.take_over(fresh, MIRRORED)
    assert fresh.state is ReplicaState.READY and fresh.pid == 7
    assert (fresh.kv_events_endpoint, fresh.kv_events_port, fresh.kv_events_bound) == (
        "tcp://10.0.0.2:41234", 41234, True,
    )  # fmt: skip
