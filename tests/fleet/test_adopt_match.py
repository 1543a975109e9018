"""Which running processes a new controller adopts, which it stops, and which it never touches
(deepfleet.fleet.adopt), with real processes standing in for engines."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace

import pytest

from deepfleet.config import FleetConfig
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines import ReplicaPlan
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.adopt import adopt_others, adopt_replicas, engine_hash, spec_hash, stop_stale
from deepfleet.fleet.process import pid_alive, pid_start_time
from deepfleet.fleet.state import FleetState, ReplicaState, ReplicaStatus

Procs = list[subprocess.Popen[bytes]]


@pytest.fixture
def procs() -> Iterator[Procs]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def sleeper(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)
    procs.append(p)
    return p


def plans(engine_args: dict[str, object], n: int) -> list[ReplicaPlan]:
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "m", "replicas": n, "engine_args": engine_args}]}
    )
    return [ReplicaPlan(cfg.models[0], f"m-{i}", "/w", "127.0.0.1", 7000 + i) for i in range(n)]


def status(plan: ReplicaPlan, proc: subprocess.Popen[bytes], **kw: object) -> ReplicaStatus:
    s = ReplicaStatus(plan.replica_id, "m", "vllm-cpu", f"http://127.0.0.1:{9000 + proc.pid % 100}",
                      pid=proc.pid, pid_start=pid_start_time(proc.pid), kv_events_port=5000,
                      devices=["3"], state=ReplicaState.READY,
                      config_hash=engine_hash(plan, KvCacheSpec()))  # fmt: skip
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_matching_engines_are_adopted_with_their_ports(procs: Procs) -> None:
    old = plans({"a": 1}, 3)
    a, b, c = sleeper(procs), sleeper(procs), sleeper(procs)
    loading = status(old[1], b, state=ReplicaState.STARTING)
    previous = FleetState(
        1, "u", replicas=[status(old[0], a), loading, status(old[2], c, draining=True)]
    )
    new, adoption = adopt_replicas(previous, plans({"a": 1}, 3), KvCacheSpec())
    assert sorted(adoption.replicas) == ["m-0", "m-1"]  # a loading engine too
    assert [s.replica_id for s in adoption.stale] == ["m-2"]  # draining: on its way out
    assert new[0].port == int(previous.replicas[0].url.rsplit(":", 1)[1])
    assert new[0].kv_events_port == 5000 and new[0].devices == ("3",)


def test_another_config_or_fewer_replicas_is_stale(procs: Procs) -> None:
    old = plans({"a": 1}, 2)
    previous = FleetState(1, "u", replicas=[status(p, sleeper(procs)) for p in old])
    _, changed = adopt_replicas(previous, plans({"a": 2}, 2), KvCacheSpec())
    assert changed.replicas == {} and len(changed.stale) == 2
    _, fewer = adopt_replicas(previous, plans({"a": 1}, 1), KvCacheSpec())
    assert list(fewer.replicas) == ["m-0"] and [s.replica_id for s in fewer.stale] == ["m-1"]
    offload = KvCacheSpec.model_validate({"offload": "cpu", "cpu_gib": 4})
    _, kv = adopt_replicas(previous, plans({"a": 1}, 2), offload)
    assert kv.replicas == {}


def test_a_reused_pid_is_never_adopted_nor_stopped(procs: Procs) -> None:
    p = sleeper(procs)
    plan = plans({}, 1)[0]
    start = pid_start_time(p.pid)
    assert start is not None
    previous = FleetState(1, "u", replicas=[status(plan, p, pid_start=start - 1)])
    _, adoption = adopt_replicas(previous, plans({}, 1), KvCacheSpec())
    assert adoption.replicas == {} and adoption.stale == []
    stop_stale([replace(previous.replicas[0])], grace_s=0.5)
    assert pid_alive(p.pid)


def test_gateway_adopted_only_with_the_same_command(procs: Procs) -> None:
    p = sleeper(procs)
    spec = LaunchSpec(argv=["gw", "--port", "8000"])
    gw = ReplicaStatus("gateway", "*", "gateway", "u", pid=p.pid,
                       pid_start=pid_start_time(p.pid), config_hash=spec_hash(spec))  # fmt: skip
    previous = FleetState(1, "u", gateway=gw)
    _, same = adopt_replicas(previous, [], KvCacheSpec())
    adopt_others(previous, {"gateway": spec}, same)
    assert list(same.others) == ["gateway"]
    _, other = adopt_replicas(previous, [], KvCacheSpec())
    adopt_others(previous, {"gateway": LaunchSpec(argv=["gw", "--port", "9000"])}, other)
    assert other.others == {} and [s.replica_id for s in other.stale] == ["gateway"]
    stop_stale(other.stale, grace_s=5)
    assert not pid_alive(p.pid)


def test_a_survivor_keeps_its_id_beside_a_replica_started_again(procs: Procs) -> None:
    """m-0 died with the controller, m-1 survived: m-1 is adopted as m-1 and m-0 started,
    never m-1 adopted for plan m-0 beside a second replica named m-1."""
    old = plans({}, 2)
    previous = FleetState(1, "u", replicas=[status(old[1], sleeper(procs))])
    new, adoption = adopt_replicas(previous, plans({}, 2), KvCacheSpec())
    assert list(adoption.replicas) == ["m-1"]
    assert sorted(p.replica_id for p in new) == ["m-0", "m-1"]


def test_a_decode_engine_is_never_adopted_for_a_prefill_replica(procs: Procs) -> None:
    """Both roles of a disaggregated model share their model's hash; the role tells them
    apart (its arguments differ)."""
    base = plans({}, 2)
    prefill, decode = (replace(p, replica_id=f"m-{r}-0", role=r) for p, r in
                       zip(base, ("prefill", "decode"), strict=True))  # fmt: skip
    survivor = status(replace(decode, replica_id="m-decode-1"), sleeper(procs), role="decode")
    previous = FleetState(1, "u", replicas=[survivor])
    new, adoption = adopt_replicas(previous, [prefill, decode], KvCacheSpec())
    assert list(adoption.replicas) == ["m-decode-1"]
    assert [(p.replica_id, p.role) for p in new] == [("m-prefill-0", "prefill"),
                                                     ("m-decode-1", "decode")]  # fmt: skip


def test_a_plan_whose_id_a_survivor_took_gets_a_free_one(procs: Procs) -> None:
    """Survivor m-5 fits plan m-0 only (plan m-5 asks for another config): it is adopted as
    m-5, and plan m-5 is started under the first free id, never beside a second m-5."""
    survivor = replace(plans({"a": 1}, 1)[0], replica_id="m-5")
    previous = FleetState(1, "u", replicas=[status(survivor, sleeper(procs))])
    other = replace(plans({"a": 2}, 1)[0], replica_id="m-5")
    new, adoption = adopt_replicas(previous, [plans({"a": 1}, 1)[0], other], KvCacheSpec())
    assert list(adoption.replicas) == ["m-5"]
    assert [(p.replica_id, p.model.engine_args) for p in new] == [
        ("m-5", {"a": 1}),
        ("m-0", {"a": 2}),
    ]
