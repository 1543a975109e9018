"""The planner's recommendations for R1 on 8 x 8 H200, run as bundles (issue 22): what
`deepfleet plan-pd --write-config` writes for a chat workload (aggregated, dp-attention 8 + EP,
8 replicas) and a long-document workload (P/D 5:3 with NIXL), and the Kubernetes bundles
rendered from those files; and on 8 x 8 Ascend 910B (int8) the long-document pick (aggregated
tp 8 x pp 8) with its Ascend bundle (test_vllm_args parses its serve.sh).

The written files are tests/deploy/data/r1-8x8-{h200,910b}-*.yaml (golden: the planner must still
write them byte for byte; after an intended planner change, DEEPFLEET_UPDATE_GOLDEN=1 rewrites
them and then the bundles under golden/, and the diff is read before committing). They are
conftest CASES, so test_golden, test_scripts and test_config cover their bundles like the
others; here: `config check` accepts them, kustomize builds every object and each validates
against the Kubernetes and KubeRay schemas, the RayCluster has a GPU pod per node, and every
engine the KubeRay head's `deepfleet up` will start (fleet.ray.plans, the Ray launcher's own
plans) parses with the installed vLLM's argument parser, with its role, layout and connector.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.engines import get_adapter
from deepfleet.engines.base import ReplicaPlan
from deepfleet.fleet.ray.placement import Placement
from deepfleet.fleet.ray.plans import plan_cluster
from deepfleet.fleet.state import NodeStatus
from tests.deploy.conftest import CASES, DATA, config_of, render_case
from tests.deploy.test_pd_bundles import kv

UPDATE = os.environ.get("DEEPFLEET_UPDATE_GOLDEN") == "1"
SOURCE = "/models/deepseek-ai/DeepSeek-R1"
LONG_DOCS = "0.5:8192:256,0.5:600:256"
PLAN = ["plan-pd", "--model", "DeepSeek-R1", "--nodes", "8", "--gpus-per-node", "8",
        "--ttft", "2", "--itl", "0.05"]  # fmt: skip
H200 = [*PLAN, "--gpu", "H200", "--mode", "kubernetes", "--source", SOURCE]
ASCEND = [*PLAN, "--gpu", "Ascend-910B", "--dtype", "int8", "--source", "/models/DeepSeek-R1-W8A8"]
WORKED = {  # workload: (written file, plan-pd arguments, bundle case)
    "chat": ("r1-8x8-h200-chat.yaml", [*H200, "--mix", "1:600:256"], "r1-8x8-h200-chat-k8s"),
    "long-docs": (
        "r1-8x8-h200-long-docs.yaml",
        [*H200, "--mix", LONG_DOCS],
        "r1-8x8-h200-long-docs-k8s",
    ),
    "910b-long-docs": (
        "r1-8x8-910b-long-docs.yaml",
        [*ASCEND, "--mix", LONG_DOCS],
        "r1-8x8-910b-long-docs-ascend",
    ),
}
ON_H200 = ["chat", "long-docs"]
KINDS = {"chat": "aggregated", "long-docs": "pd", "910b-long-docs": "aggregated"}
POOLS = {"chat": "x8 on vllm", "long-docs": "prefill x5 + decode x3 on vllm",
         "910b-long-docs": "x1 on vllm-ascend"}  # fmt: skip


def plan_pd(workload: str, *extra: str) -> str:
    result = CliRunner().invoke(app, [*WORKED[workload][1], *extra])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("workload", sorted(WORKED))
def test_plan_pd_writes_the_worked_example(workload: str, tmp_path: Path) -> None:
    name = WORKED[workload][0]
    plan_pd(workload, "--write-config", str(tmp_path / name))
    if UPDATE:
        shutil.copy(tmp_path / name, DATA / name)
    assert (tmp_path / name).read_text() == (DATA / name).read_text()


@pytest.mark.parametrize("workload", sorted(WORKED))
def test_json_carries_the_same_config(workload: str) -> None:
    doc = json.loads(plan_pd(workload, "--json"))
    assert doc["config"] == yaml.safe_load((DATA / WORKED[workload][0]).read_text())
    assert doc["recommended"]["kind"] == KINDS[workload]
    assert doc["config_notes"] == []  # `render` takes it as is


def test_a_pick_the_bundles_refuse_is_written_with_a_note(tmp_path: Path) -> None:
    # R1 chat on 8 x 8 910B: the planner picks data-parallel attention over all 64 NPUs, one
    # engine across nodes, which the launchers do not run.
    out = tmp_path / "fleet.yaml"
    result = CliRunner().invoke(app, [*ASCEND, "--mix", "1:600:256", "--write-config", str(out)])
    assert result.exit_code == 0, result.output
    assert "recommended: dp-attention 64 + ep x1" in result.output
    assert (
        "note: `deepfleet render` refuses it: models[0].parallel: data-parallel attention over "
        "64 devices spans nodes of 8"
    ) in " ".join(result.output.split())
    assert yaml.safe_load(out.read_text())["models"][0]["parallel"]["dp"] == 64


@pytest.mark.parametrize("workload", sorted(WORKED))
def test_config_check_accepts_it(workload: str) -> None:
    path = DATA / WORKED[workload][0]
    result = CliRunner().invoke(app, ["config", "check", "-f", str(path)])
    assert result.exit_code == 0, result.output
    assert f"deepseek-r1 {POOLS[workload]}" in " ".join(result.output.split())


def test_chat_runs_aggregated_and_long_documents_disaggregated() -> None:
    chat = yaml.safe_load((DATA / WORKED["chat"][0]).read_text())["models"][0]
    assert (chat["replicas"], chat["parallel"]) == (8, {"tp": 1, "pp": 1, "dp": 8, "ep": True})
    assert "disaggregation" not in chat
    docs = yaml.safe_load((DATA / WORKED["long-docs"][0]).read_text())["models"][0]
    pool = {"tensor_parallel_size": 1, "data_parallel_size": 8, "expert_parallel": True}
    assert docs["disaggregation"] == {
        "connector": "nixl",  # `auto` on vllm (NVIDIA), written out
        "prefill": {"replicas": 5, **pool},
        "decode": {"replicas": 3, **pool},
    }
    assert "replicas" not in docs and "parallel" not in docs


@pytest.mark.parametrize("workload", ON_H200)
def test_k8s_bundle_validates(workload: str, tmp_path: Path) -> None:
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    from tests.deploy.manifests import validate
    from tests.deploy.test_k8s import by_kind, kustomize

    bundle = render_case(CASES[WORKED[workload][2]])
    bundle.write(tmp_path)
    built = kustomize(tmp_path)
    for doc in built:
        validate(doc)
    group = by_kind(built, "RayCluster")[0]["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == 8
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"] == "8"
    rendered = yaml.safe_load(bundle.files["fleet.yaml"])
    assert rendered["models"] == CASES[WORKED[workload][2]].data()["models"]


def _placed(workload: str) -> list[tuple[ReplicaPlan, Placement]]:
    """Every engine `up` starts on the KubeRay cluster from the bundle's fleet.yaml (the
    Secret the head reads), with its Ray placement. On the cluster the head reads R1's
    config.json under /models; here the catalog's copy of it (the hub id as source), so the
    pools are sized by the planner as they will be there."""
    bundle = render_case(CASES[WORKED[workload][2]])
    data = yaml.safe_load(bundle.files["fleet.yaml"])
    data["models"][0]["source"] = "deepseek-ai/DeepSeek-R1"
    gpus = {"GPU": 8.0, "CPU": 96.0}
    nodes = [NodeStatus(f"n{i}", f"10.0.0.{i}", True, devices=gpus, memory_bytes=2**40)
             for i in range(1, 9)]  # fmt: skip
    return plan_cluster(config_of(data), {"deepseek-r1": SOURCE}, nodes)


def _engines(workload: str, vllm_parser: Any) -> list[tuple[str, Any]]:
    """(role, vLLM's parse of its arguments) of every engine of `_placed`."""
    out = []
    for plan, where in _placed(workload):
        assert not where.spans_nodes  # one node holds a whole replica (8 x 141 GB)
        argv = get_adapter("vllm").launch_spec(plan).argv
        out.append((plan.role, vllm_parser.parse_args(argv[argv.index("--model") :])))
    return out


def test_chat_engines(vllm_parser: Any) -> None:
    engines = _engines("chat", vllm_parser)
    assert len(engines) == 8
    for role, args in engines:
        assert role == "" and args.kv_transfer_config is None
        assert (args.tensor_parallel_size, args.data_parallel_size) == (1, 8)
        assert args.enable_expert_parallel and args.max_model_len == 32768
        assert args.model == SOURCE and args.served_model_name == ["deepseek-r1"]
        assert (args.max_num_seqs, args.gpu_memory_utilization) == (20, 0.92)


def test_long_document_engines(vllm_parser: Any) -> None:
    engines = _engines("long-docs", vllm_parser)
    seen = [
        (role, kv(a).kv_connector, kv(a).kv_role, a.data_parallel_size, a.all2all_backend)
        for role, a in engines
    ]
    assert (
        seen
        == [("prefill", "NixlConnector", "kv_producer", 8, "deepep_high_throughput")] * 5
        + [("decode", "NixlConnector", "kv_consumer", 8, "deepep_low_latency")] * 3
    )
    for _, args in engines:
        assert args.tensor_parallel_size == 1 and args.enable_expert_parallel
        assert args.max_model_len == 32768
        assert (args.max_num_seqs, args.gpu_memory_utilization) == (20, 0.92)


@pytest.mark.parametrize("workload", ON_H200)
def test_ray_reserves_every_device_of_a_replica(workload: str) -> None:
    for plan, where in _placed(workload):
        assert where.bundles == ({"GPU": 8.0},), plan.replica_id
