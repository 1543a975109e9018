"""Which detached engine hosts a new controller adopts in Ray mode and which it kills
(deepfleet.fleet.ray.survivors), and that a supervisor actor's supervision outlives the
controller call that started it (deepfleet.fleet.ray.actor)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deepfleet.config import FleetConfig
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.adopt import engine_hash
from deepfleet.fleet.ray.actor import EngineHost
from deepfleet.fleet.ray.survivors import (
    FleetRecord,
    FoundHost,
    HostIdentity,
    decide,
    fleet_prefix,
    host_name,
    replica_of,
    under,
)
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy

KV = KvCacheSpec()
PREFIX = "fleet-0123abcd"


def plans(n: int, engine_args: dict[str, object] | None = None) -> list[ReplicaPlan]:
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "m", "replicas": n, "engine_args": engine_args or {}}]}
    )
    return [ReplicaPlan(cfg.models[0], f"m-{i}", "/w", "", 0) for i in range(n)]


def host(
    plan: ReplicaPlan,
    *,
    alive: bool = True,
    state: ReplicaState = ReplicaState.READY,
    draining: bool = False,
    answered: bool = True,
) -> FoundHost:
    name = host_name(PREFIX, plan.replica_id, "1.abc123")
    if not answered:
        return FoundHost(name, None, "no answer in 10s")
    st = ReplicaStatus(plan.replica_id, "m", "vllm-cpu", "http://10.0.0.2:41000", state=state,
                       pid=4242, pid_start=99, node="10.0.0.2", kv_events_port=5001,
                       draining=draining, config_hash=engine_hash(plan, KV))  # fmt: skip
    return FoundHost(name, HostIdentity(st, alive, "node-2", (0, 1)))


def killed(decision_kill: list[tuple[FoundHost, str]]) -> list[str]:
    return [replica_of(h.name) for h, _ in decision_kill]


def test_a_matching_host_is_adopted_with_its_replica_id_and_nothing_is_killed() -> None:
    old = plans(2)
    d = decide([host(old[0]), host(old[1])], plans(2), KV)
    assert sorted(d.adopted) == ["m-0", "m-1"] and d.kill == []
    assert [p.replica_id for p in d.plans] == ["m-0", "m-1"]
    assert d.plans[0].kv_events_port == 5001
    assert sorted(d.adoption.replicas) == ["m-0", "m-1"] and d.adoption.stale == []


def test_no_host_means_every_replica_is_started() -> None:
    want = plans(2)
    d = decide([], want, KV)
    assert d.plans == want and d.adopted == {} and d.kill == []


def test_another_config_is_killed_and_its_replica_started_again() -> None:
    old = plans(2, {"a": 1})
    d = decide([host(old[0]), host(old[1])], plans(2, {"a": 2}), KV)
    assert d.adopted == {} and killed(d.kill) == ["m-0", "m-1"]
    assert all("another config" in why for _, why in d.kill)
    assert [p.replica_id for p in d.plans] == ["m-0", "m-1"]
    # The stale list names them without a pid: their engines are on other nodes.
    assert [(s.replica_id, s.pid) for s in d.adoption.stale] == [("m-0", None), ("m-1", None)]


def test_more_hosts_than_the_config_wants_are_killed() -> None:
    old = plans(3)
    d = decide([host(p) for p in old], plans(1), KV)
    assert list(d.adopted) == ["m-0"] and killed(d.kill) == ["m-1", "m-2"]


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"answered": False}, "did not answer"),
        ({"alive": False}, "engine is not running"),
        ({"state": ReplicaState.RESTARTING}, "on its way out"),
        ({"state": ReplicaState.STOPPING}, "on its way out"),
        ({"draining": True}, "on its way out"),
    ],
)
def test_a_host_that_cannot_serve_is_killed(kw: dict[str, object], why: str) -> None:
    old = plans(1)
    d = decide([host(old[0], **kw)], plans(1), KV)  # type: ignore[arg-type]
    assert d.adopted == {} and killed(d.kill) == ["m-0"] and why in d.kill[0][1]
    assert [p.replica_id for p in d.plans] == ["m-0"]  # started again


def test_a_loading_host_is_adopted() -> None:
    old = plans(1)
    d = decide([host(old[0], state=ReplicaState.STARTING)], plans(1), KV)
    assert list(d.adopted) == ["m-0"]


def test_a_survivor_keeps_its_id_and_the_missing_replica_is_started_beside_it() -> None:
    # m-0's node died with the controller; m-1 survived. m-1 is adopted as itself and m-0
    # started, not m-1 adopted for plan m-0 next to a second m-1.
    old = plans(2)
    d = decide([host(old[1])], plans(2), KV)
    assert list(d.adopted) == ["m-1"]
    assert sorted(p.replica_id for p in d.plans) == ["m-0", "m-1"]


def test_a_survivor_with_another_id_takes_the_only_plan() -> None:
    old = plans(2)
    d = decide([host(old[1])], plans(1), KV)
    assert list(d.adopted) == ["m-1"] and [p.replica_id for p in d.plans] == ["m-1"]


def test_names_are_per_fleet() -> None:
    names = [host_name(PREFIX, "org/m-0", "1.a"), host_name("fleet-other", "m-0", "1.b"), "x"]
    assert under(PREFIX, names) == [f"{PREFIX}/org/m-0/1.a"]
    assert replica_of(names[0]) == "org/m-0"


def test_supervision_outlives_the_call_that_started_it() -> None:
    """A controller SIGKILLed mid-run() may have its call cancelled; the engine's supervision
    goes on, and the next controller's run() waits on the same one."""
    status = ReplicaStatus("m-0", "m", "vllm-cpu", "")
    actor = EngineHost(plans(1)[0], status, SupervisorPolicy())
    started: list[int] = []
    done = asyncio.Event()

    async def supervise() -> ReplicaStatus:
        started.append(1)
        await done.wait()
        return status

    actor._supervise = supervise  # type: ignore[method-assign]

    async def main() -> ReplicaStatus:
        first = asyncio.ensure_future(actor.run())
        await asyncio.sleep(0.01)
        first.cancel()  # the old controller's call goes away
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(actor.run())
        await asyncio.sleep(0.01)
        assert not second.done()
        done.set()
        return await second

    assert asyncio.run(main()) is status
    assert started == [1]


def test_the_record_down_reads_and_one_prefix_per_state_dir(tmp_path: Path) -> None:
    assert FleetRecord.load(tmp_path) is None  # no Ray fleet ran here: down has nothing to do
    FleetRecord("10.0.0.1:6379", "deepfleet", fleet_prefix(tmp_path)).save(tmp_path)
    assert FleetRecord.load(tmp_path) == FleetRecord(
        "10.0.0.1:6379", "deepfleet", fleet_prefix(tmp_path)
    )
    assert fleet_prefix(tmp_path) == fleet_prefix(tmp_path / ".")
    assert fleet_prefix(tmp_path) != fleet_prefix(tmp_path / "other")
