"""The reference plan (DeepSeek-R1, TP 8 inside a node x PP 2 across two nodes, 16 GPUs) as
cluster mode places and launches it: one GPU bundle per rank packed two nodes deep, vLLM's Ray
executor, and a command line that vLLM's own argument parser accepts (vLLM's CPU build cannot
run it: it has no Ray executor; see tests/fleet/ray/cluster)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS
from deepfleet.config.load import validate
from deepfleet.engines import get_adapter
from deepfleet.fleet.ray.actor import guarded, in_placement_group
from deepfleet.fleet.ray.placement import actor_options
from deepfleet.fleet.ray.plans import plan_cluster
from deepfleet.fleet.state import NodeStatus

REFERENCE = """
cluster: {mode: ray, head: 10.0.0.1, nodes: 2, devices_per_node: 8, device: A100-80GB,
          network: {interface: eth0}}
models:
  - name: deepseek-r1
    source: {source}
    engine: vllm
    parallel: {tp: 8, pp: 2}
    max_model_len: 16384
    engine_args: {enable_chunked_prefill: true, max_num_batched_tokens: 8192}
"""
NODES = [
    NodeStatus(f"n{i}", f"10.0.0.{i}", True, i == 1, devices={"GPU": 8, "CPU": 96},
               memory_bytes=900 * 2**30)
    for i in (1, 2)
]  # fmt: skip
SERVER = "vllm.entrypoints.openai.api_server"


def reference(folder: Path) -> tuple[Any, Any]:
    """The plan for R1 whose folder (config.json only, as on the head) is `folder`."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-R1"]))
    cfg = validate(yaml.safe_load(REFERENCE.replace("{source}", str(folder))), "reference")
    ((plan, where),) = plan_cluster(cfg, {"deepseek-r1": str(folder)}, NODES)
    return plan, where


def test_placement_of_the_reference_plan(tmp_path: Path) -> None:
    plan, where = reference(tmp_path / "DeepSeek-R1")
    assert (plan.tp, plan.pp, plan.distributed_executor_backend) == (8, 2, "ray")
    assert where.strategy == "PACK" and list(where.bundles) == [{"GPU": 1.0}] * 16
    assert where.tp == 8 and actor_options(where) == {"num_cpus": 0, "num_gpus": 0}
    assert plan.max_model_len == 16384 and plan.max_num_seqs and plan.gpu_memory_utilization


def test_vllm_accepts_the_generated_arguments(vllm_parser: Any, tmp_path: Path) -> None:
    plan, _ = reference(tmp_path / "DeepSeek-R1")
    spec = get_adapter("vllm").launch_spec(replace(plan, host="10.0.0.1", port=8100))
    env = {"RAY_ADDRESS": "10.0.0.1:6379", "VLLM_HOST_IP": "10.0.0.1"}
    launched = guarded(in_placement_group(spec, "fleet-x/deepseek-r1-0/1", "deepfleet", env),
                       4242, "python3")  # fmt: skip
    argv = launched.argv
    entry = argv.index("deepfleet.fleet.ray.vllm_entry")
    assert argv[: entry - 1] == ["python3", "-m", "deepfleet.fleet.ray.guard", "4242", "--",
                                 "python3"]  # fmt: skip
    args = vllm_parser.parse_args(argv[entry + 1 :])
    assert args.tensor_parallel_size == 8 and args.pipeline_parallel_size == 2
    assert args.distributed_executor_backend == "ray"
    assert args.max_model_len == 16384 and args.max_num_batched_tokens == 8192
    assert args.enable_chunked_prefill is True and args.reasoning_parser == "deepseek_r1"
    assert args.gpu_memory_utilization == pytest.approx(plan.gpu_memory_utilization)
    assert args.max_num_seqs == plan.max_num_seqs and args.host == "10.0.0.1"
    assert launched.env["DEEPFLEET_PLACEMENT_GROUP"] == "fleet-x/deepseek-r1-0/1"
    print("reference plan:", " ".join(argv[entry + 1 :]))
