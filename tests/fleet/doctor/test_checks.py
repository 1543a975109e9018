"""Each doctor rule with made-up node facts: the finding, its level and its fix."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from deepfleet.config import default_config
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.schema import FleetConfig, ModelSpec
from deepfleet.fleet.doctor import Expectations, Finding, NodeFacts, judge_node, port_findings
from deepfleet.fleet.doctor.checks import ModelNeed, expectations
from deepfleet.fleet.doctor.cluster import clock_finding, reach_findings
from deepfleet.fleet.doctor.facts import PathFacts, collect

GiB = 2**30
FOLDER = ModelNeed("r1", "models[0].source", "folder", "/models/r1")
GPU = Expectations("nvidia", 8, "eth0", (FOLDER,), frozenset({"vllm"}))
HEALTHY = NodeFacts(
    node="10.0.0.2", hostname="n2", time=0.0, nvidia_driver="550.54", cuda_version="12.4",
    gpus=("NVIDIA A100-SXM4-40GB",) * 8, vllm_installed=True, shm_bytes=64 * GiB,
    interfaces=("eth0", "lo"),
    paths=(PathFacts("/models/r1", True, True, 900 * 10**9, "/models"),),
)  # fmt: skip


def by_check(found: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in found}


def test_a_healthy_gpu_node_is_all_ok() -> None:
    found = judge_node(HEALTHY, GPU)
    assert {f.check for f in found} == {"driver", "shm", "engine", "nic", "model"}
    assert all(f.level == "ok" for f in found), found
    assert "NVIDIA driver 550.54, CUDA 12.4, 8 x NVIDIA A100" in by_check(found)["driver"].message


@pytest.mark.parametrize(
    ("change", "check", "level", "says", "fix"),
    [
        ({"paths": (PathFacts("/models/r1", False, False, None, None),)}, "model", "error",
         "model folder /models/r1 (models[0].source) does not exist on this node",
         "copy the model there"),
        ({"paths": (PathFacts("/models/r1", True, False, 1, "/"),)}, "model", "error",
         "has no config.json", "copy the model there"),
        ({"nvidia_driver": None, "gpus": ()}, "driver", "error", "no NVIDIA driver",
         "install the NVIDIA driver"),
        ({"gpus": ("A100",) * 4}, "driver", "error", "4 GPU(s) visible", "CUDA_VISIBLE_DEVICES"),
        ({"shm_bytes": 64 * 2**20}, "shm", "error", "/dev/shm is 0.06 GiB", "--shm-size"),
        ({"interfaces": ("ens5", "lo")}, "nic", "error",
         "NIC eth0 (cluster.network.interface) does not exist here (it has: ens5)",
         "cluster.network.interface"),
        ({"vllm_installed": False}, "engine", "error", "vLLM is not installed", "pip install"),
    ],
)  # fmt: skip
def test_each_failure_names_its_fix(
    change: dict[str, object], check: str, level: str, says: str, fix: str
) -> None:
    f = by_check(judge_node(replace(HEALTHY, **change), GPU))[check]  # type: ignore[arg-type]
    assert (f.level, f.node) == (level, "10.0.0.2")
    assert says in f.message and f.fix is not None and fix in f.fix
    assert f.line().startswith(f"{level.upper():5} 10.0.0.2") and "-> fix: " in f.line()


def test_download_needs_room_for_the_weights() -> None:
    need = ModelNeed("r1", "models[0].source", "download", "/hf/hub", 700 * 10**9)
    exp = replace(GPU, models=(need,))
    small = replace(HEALTHY, paths=(PathFacts("/hf/hub", False, False, 100 * 10**9, "/"),))
    f = by_check(judge_node(small, exp))["disk"]
    assert f.level == "error" and "100.0 GB free at /, the weights need 770.0 GB" in f.message
    assert f.fix and "HF_HOME" in f.fix
    roomy = replace(HEALTHY, paths=(PathFacts("/hf/hub", True, False, 10**12, "/"),))
    assert by_check(judge_node(roomy, exp))["disk"].level == "ok"


def test_expectations_from_a_config_and_the_weights_of_a_catalog_model() -> None:
    cfg = FleetConfig(
        models=[
            ModelSpec(name="a", source="bundled"),
            ModelSpec(name="b", source="/nowhere/model", engine="vllm"),
            ModelSpec(name="c", source="deepseek-ai/DeepSeek-R1", engine="vllm"),
        ]
    )
    exp = expectations(cfg)
    assert [m.kind for m in exp.models] == ["bundled", "folder", "download"]
    assert exp.models[2].bytes_needed is not None and exp.models[2].bytes_needed > 600 * 10**9


def test_missing_model_folder_on_this_machine(tmp_path: Path) -> None:
    cfg = FleetConfig(models=[ModelSpec(name="m", source=str(tmp_path / "absent"))])
    exp = expectations(cfg)
    found = by_check(judge_node(collect("local", exp.paths), exp))
    assert found["model"].level == "error"
    assert f"model folder {tmp_path / 'absent'}" in found["model"].message


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port this test listens on until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def test_a_port_in_use_names_the_holder_and_the_fix() -> None:
    with held_port() as port:
        cfg = default_config()
        cfg.gateway.port = port
        (f,) = port_findings(cfg)
    assert f.level == "error" and f"port {port} (gateway.port) is in use" in f.message
    assert "pid " in f.message  # who holds it (this test)
    assert f.fix and "gateway.port" in f.fix and "--port" in f.fix
    (free,) = port_findings(cfg)
    assert free.level == "ok"


def test_the_fleets_kv_store_port_is_checked() -> None:
    with held_port() as port:
        cfg = default_config()
        cfg.kv_cache = KvCacheSpec.model_validate(
            {"offload": "lmcache", "remote": {"kind": "redis", "port": port}}
        )
        found = port_findings(cfg)
    assert [f.level for f in found] == ["ok", "error"]
    assert f"port {port} (kv_cache.remote.port) is in use" in found[1].message
    cfg.kv_cache.remote = cfg.kv_cache.remote.model_copy(update={"url": "redis://h:6379"})
    assert len(port_findings(cfg)) == 1  # an existing store: nothing to bind here


@pytest.mark.parametrize(("skew", "level"), [(0.01, "ok"), (-0.9, "warn"), (5.0, "error")])
def test_clock_skew(skew: float, level: str) -> None:
    f = clock_finding("n2", skew)
    assert f.level == level and (f.fix is None) == (level == "ok")


def test_unreachable_ports_between_nodes() -> None:
    ok = reach_findings("n1", [("node n2's test port 1", None)])
    assert [f.level for f in ok] == ["ok"]
    bad = reach_findings("n1", [("the head's Ray port 6379", "10.0.0.1:6379: Connection refused")])
    assert bad[0].level == "error" and "cannot reach the head's Ray port 6379" in bad[0].message
    assert bad[0].fix and "--port-base" in bad[0].fix
