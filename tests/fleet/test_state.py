"""The state file across versions: a reader ignores keys a newer writer added (a rolling
upgrade: an older gateway follows a newer controller's fleet.json) and still refuses a file
that lacks what it needs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from deepfleet.fleet.state import (
    ApplyStatus,
    FleetState,
    ModelRoute,
    NodeStatus,
    ReplicaState,
    ReplicaStatus,
    read_state,
    write_state,
)


def _state() -> FleetState:
    replica = ReplicaStatus("m-0", "m", "vllm", "http://127.0.0.1:9", ReplicaState.READY)
    gateway = ReplicaStatus("gateway", "-", "gateway", "http://127.0.0.1:8", ReplicaState.READY)
    return FleetState(
        controller_pid=1,
        gateway_url="http://127.0.0.1:8",
        models=[ModelRoute("m", "round_robin", tokenizer="/t")],
        replicas=[replica],
        gateway=gateway,
        services=[ReplicaStatus("prom", "-", "prometheus", "http://127.0.0.1:7")],
        nodes=[NodeStatus("n1", "10.0.0.1", True)],
        apply=ApplyStatus(3, phase="running"),
    )


def _newer(data: dict[str, object]) -> dict[str, object]:
    """`data` as a newer deepfleet might write it: a new key at every level."""
    out = json.loads(json.dumps(data))
    out["shards"] = {"future": True}
    for key in ("models", "replicas", "services", "nodes"):
        for item in out[key]:
            item["from_the_future"] = [1, 2]
    out["gateway"]["workers_alive"] = 2
    out["apply"]["canary"] = "10%"
    return dict(out)


def test_a_newer_file_reads_as_what_this_version_knows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fleet.json"
    write_state(path, _state())
    written = json.loads(path.read_text())
    path.write_text(json.dumps(_newer(written)))
    with caplog.at_level(logging.DEBUG, logger="deepfleet.fleet.state"):
        state = read_state(path)
        again = read_state(path)
    assert state is not None and again is not None
    assert state.to_json() == written
    assert state.replicas[0].state is ReplicaState.READY
    assert state.models[0].tokenizer == "/t"
    assert state.apply is not None and state.apply.phase == "running"
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert any("ReplicaStatus" in m and "from_the_future" in m for m in ignored), ignored
    assert any("ApplyStatus" in m and "canary" in m for m in ignored), ignored
    assert len(ignored) == len(set(ignored)), "each set of unknown keys is logged once"


@pytest.mark.parametrize(
    ("where", "key"),
    [("replicas", "url"), ("replicas", "state"), ("models", "routing"), ("nodes", "alive")],
)
def test_a_file_without_a_needed_key_is_no_state(tmp_path: Path, where: str, key: str) -> None:
    path = tmp_path / "fleet.json"
    data = _newer(_state().to_json())
    del data[where][0][key]  # type: ignore[index]
    path.write_text(json.dumps(data))
    assert read_state(path) is None
