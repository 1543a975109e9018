"""Service discovery and fleet-state metrics: pure functions, the Starlette endpoints, and
the fleet.json reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from deepfleet.fleet.state import FleetState, ModelRoute, ReplicaState, ReplicaStatus, write_state
from deepfleet.observability import fleet_metrics
from deepfleet.observability.sd import observability_routes, sd_targets, state_file_reader

MODEL = "m"


def replica(i: int, state: ReplicaState, *, ready_at: float | None = 1.0, restarts: int = 0,
            url: str | None = None, node: str = "local") -> ReplicaStatus:  # fmt: skip
    return ReplicaStatus(
        replica_id=f"{MODEL}-{i}", model=MODEL, engine="vllm",
        url=url or f"http://127.0.0.1:{9000 + i}", state=state, ready_at=ready_at,
        restarts=restarts, node=node,
    )  # fmt: skip


def fleet(*replicas: ReplicaStatus, stopping: bool = False) -> FleetState:
    gw = ReplicaStatus("gateway", "*", "gateway", "http://127.0.0.1:8000", ReplicaState.READY)
    return FleetState(
        controller_pid=os.getpid(), gateway_url="http://127.0.0.1:8000",
        models=[ModelRoute(MODEL, "round_robin")], replicas=list(replicas), gateway=gw,
        stopping=stopping,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "listed"),
    [
        (replica(0, ReplicaState.READY), True),
        (replica(0, ReplicaState.UNHEALTHY), True),
        (replica(0, ReplicaState.RESTARTING, ready_at=None, restarts=1), True),
        (replica(0, ReplicaState.STARTING, ready_at=None, restarts=2), True),
        (replica(0, ReplicaState.FAILED, ready_at=None, restarts=5), True),
        # Still loading its first weights: not down, so not a target yet.
        (replica(0, ReplicaState.STARTING, ready_at=None), False),
        (replica(0, ReplicaState.STOPPING), False),
        (replica(0, ReplicaState.STOPPED), False),
    ],
    ids=lambda v: v.state.value if isinstance(v, ReplicaStatus) else str(v),
)
def test_which_engines_are_listed(status: ReplicaStatus, listed: bool) -> None:
    engines = [g for g in sd_targets(fleet(status)) if g["labels"]["role"] == "engine"]  # type: ignore[index]
    assert len(engines) == int(listed)


def test_target_groups_carry_role_model_replica_node() -> None:
    groups = sd_targets(fleet(replica(0, ReplicaState.READY, node="gpu-3"),
                              replica(1, ReplicaState.READY)))  # fmt: skip
    assert groups == [
        {"targets": ["127.0.0.1:9000"],
         "labels": {"role": "engine", "model": MODEL, "replica": "m-0", "node": "gpu-3"}},
        {"targets": ["127.0.0.1:9001"],
         "labels": {"role": "engine", "model": MODEL, "replica": "m-1", "node": "local"}},
        {"targets": ["127.0.0.1:8000"], "labels": {"role": "gateway", "node": "local"}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "target", "extra"),
    [
        ("http://10.0.0.5:8100", "10.0.0.5:8100", {}),
        ("https://engine.internal", "engine.internal:443", {"__scheme__": "https"}),
        ("http://[::1]:8100", "[::1]:8100", {}),
        ("http://h:8100/prefix/", "h:8100", {"__metrics_path__": "/prefix/metrics"}),
    ],
)
def test_addresses_and_schemes(url: str, target: str, extra: dict[str, str]) -> None:
    (group, _gw) = sd_targets(fleet(replica(0, ReplicaState.READY, url=url)))
    assert group["targets"] == [target]
    labels = group["labels"]
    assert isinstance(labels, dict)
    assert {k: v for k, v in labels.items() if k.startswith("__")} == extra


def test_stopping_fleet_lists_nothing() -> None:
    assert sd_targets(fleet(replica(0, ReplicaState.READY), stopping=True)) == []


def test_fleet_metrics_one_state_per_replica_and_restarts() -> None:
    text = fleet_metrics.render(fleet(replica(0, ReplicaState.READY, restarts=2),
                                      replica(1, ReplicaState.RESTARTING, restarts=1)))  # fmt: skip
    families = {f.name: f for f in text_string_to_metric_families(text)}
    states = families["deepfleet_replica_state"].samples
    current = {(s.labels["replica"], s.labels["state"]) for s in states if s.value == 1}
    assert current == {("m-0", "ready"), ("m-1", "restarting")}
    assert len(states) == 2 * len(ReplicaState)
    restarts = {
        s.labels["replica"]: s.value for s in families["deepfleet_replica_restarts"].samples
    }
    assert restarts == {"m-0": 2, "m-1": 1}
    empty = fleet_metrics.render(None)
    assert empty.count("# TYPE") == 5 and "{" not in empty  # headers only


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_endpoints_on_a_starlette_app(token: str | None) -> None:
    state = fleet(replica(0, ReplicaState.READY))
    app = Starlette(routes=observability_routes(lambda: state, token))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app) as client:
        r = client.get("/sd/targets", headers=headers)
        assert r.status_code == 200
        assert r.json() == sd_targets(state)
        m = client.get("/metrics/fleet", headers=headers)
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
        assert 'deepfleet_replica_state{replica="m-0"' in m.text
        if token:
            assert client.get("/sd/targets").status_code == 401
            assert client.get("/metrics/fleet").status_code == 401


def test_no_state_is_an_empty_target_list() -> None:
    with TestClient(Starlette(routes=observability_routes(lambda: None))) as client:
        assert client.get("/sd/targets").json() == []


def test_state_file_reader_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    read = state_file_reader(path)
    assert read() is None
    write_state(path, fleet(replica(0, ReplicaState.READY)))
    first = read()
    assert first is not None and read() is first  # parsed once while unchanged
    write_state(path, fleet(replica(0, ReplicaState.READY), replica(1, ReplicaState.READY)))
    os.utime(path, ns=(1, 1))  # a distinct mtime even on a coarse clock
    again = read()
    assert again is not None and len(again.replicas) == 2
