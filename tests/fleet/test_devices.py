"""Local mode on a machine with several accelerators: each replica gets devices of its own
through its engine's visible-devices variable, not all of them device 0."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepfleet.config import FleetConfig
from deepfleet.config.load import validate
from deepfleet.fleet.launcher import LocalLauncher
from deepfleet.fleet.replicas import InfeasibleConfig, MachineFacts, plan_local, visible_devices
from deepfleet.fleet.state import ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy

GiB = 2**30
FOUR_GPUS = MachineFacts([0, 1], 64 * GiB, {"nvidia": ["0", "1", "2", "3"], "ascend": []})


def config(models: str) -> FleetConfig:
    return validate(yaml.safe_load("models:\n" + models))


def launch_env(machine: MachineFacts, cfg: FleetConfig) -> list[dict[str, str]]:
    launcher = LocalLauncher(machine)
    out = []
    for plan in launcher.plans(cfg, {m.name: "/m" for m in cfg.models}):
        status = ReplicaStatus(plan.replica_id, plan.model.name, plan.model.engine, plan.url)
        runner = launcher.runner(plan, status, lambda: None, SupervisorPolicy())
        out.append(runner.spec.env)
    return out


def test_replicas_get_consecutive_devices_of_their_own() -> None:
    cfg = config(
        "  - {name: a, source: someone/a, engine: vllm, replicas: 2, parallel: {tp: 1}}\n"
        "  - {name: b, source: someone/b, engine: vllm, parallel: {tp: 2}}\n"
    )
    plans = plan_local(cfg, {"a": "/a", "b": "/b"}, FOUR_GPUS)
    assert [p.devices for p in plans] == [("0",), ("1",), ("2", "3")]
    envs = launch_env(FOUR_GPUS, cfg)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2,3"]


def test_data_parallel_ranks_count_as_devices() -> None:
    cfg = config("  - {name: a, source: someone/a, engine: vllm, parallel: {tp: 2, dp: 2}}\n")
    (plan,) = plan_local(cfg, {"a": "/a"}, FOUR_GPUS)
    assert plan.devices == ("0", "1", "2", "3")


def test_more_devices_than_the_machine_has_names_the_fields() -> None:
    cfg = config(
        "  - {name: a, source: someone/a, engine: vllm, replicas: 2, parallel: {tp: 2}}\n"
        "  - {name: b, source: someone/b, engine: vllm, parallel: {tp: 1}}\n"
    )
    with pytest.raises(InfeasibleConfig) as err:
        plan_local(cfg, {"a": "/a", "b": "/b"}, FOUR_GPUS)
    text = "\n".join(err.value.lines)
    assert "need 5 nvidia devices on this machine and it has 4" in text
    assert "models[0] a 4, models[1] b 1" in text
    assert "lower `replicas` or `parallel`" in text


def test_a_pinned_model_keeps_its_devices_and_cpu_engines_get_none() -> None:
    cfg = config(
        "  - {name: a, source: someone/a, engine: vllm, engine_env: {CUDA_VISIBLE_DEVICES: '3'}}\n"
        "  - {name: b, source: someone/b, engine: vllm}\n"
        "  - {name: c, source: bundled, engine: vllm-cpu}\n"
    )
    plans = plan_local(cfg, {"a": "/a", "b": "/b", "c": "/c"}, FOUR_GPUS)
    assert [p.devices for p in plans] == [(), ("0",), ()]
    envs = launch_env(FOUR_GPUS, cfg)
    assert envs[0]["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in envs[2]


def test_no_known_devices_leaves_the_engine_its_environment() -> None:
    cfg = config("  - {name: a, source: someone/a, engine: vllm, replicas: 3}\n")
    plans = plan_local(cfg, {"a": "/a"}, MachineFacts([0, 1], 64 * GiB, {"nvidia": []}))
    assert [p.devices for p in plans] == [(), (), ()]


def test_ascend_engines_use_their_own_variable() -> None:
    cfg = config("  - {name: a, source: someone/a, engine: vllm-ascend, replicas: 2}\n")
    machine = MachineFacts([0, 1], 64 * GiB, {"nvidia": ["0"], "ascend": ["0", "1"]})
    envs = launch_env(machine, cfg)
    assert [e["ASCEND_RT_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]


def test_visible_devices_from_the_variable_or_the_device_nodes(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm", "davinci0"):
        (tmp_path / name).touch()
    assert visible_devices("nvidia", {}, tmp_path) == ["0", "1", "10"]
    assert visible_devices("ascend", {}, tmp_path) == ["0"]
    assert visible_devices("nvidia", {"CUDA_VISIBLE_DEVICES": "2, 5"}, tmp_path) == ["2", "5"]
    assert visible_devices("nvidia", {"CUDA_VISIBLE_DEVICES": ""}, tmp_path) == []
    assert visible_devices("nvidia", {}, tmp_path / "missing") == []
