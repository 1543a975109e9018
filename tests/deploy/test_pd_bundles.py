"""A disaggregated model in the bundles: both roles' engine arguments, parsed by the installed
vLLM's own argument parser as the other bundles' commands are.

- Ascend (vllm-ascend through Ray): serve.sh starts every prefill and decode engine with its
  role's --kv-transfer-config (vllm-ascend's MooncakeConnectorV1, `auto` on vllm-ascend, with
  each engine's kv_port and engine_id and both pools' layouts); the Ray launcher of `up`
  numbers them the same way.
- Kubernetes: the bundle runs `deepfleet up` on a KubeRay head, whose Ray launcher builds the
  engine commands at run time from the same plans (fleet.ray.plans.plan_cluster): R1 on
  2 x 8 H200, prefill TP 8 and decode DP 8, both with expert parallelism and NIXL.
- compose: each pool's engines as services, the gateway's fleet.json listing their roles, a
  NIXL engine advertising its side channel by its service name.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from deepfleet.config import FleetConfig, validate
from deepfleet.deploy.compose import render_compose
from deepfleet.deploy.k8s import render_k8s
from deepfleet.deploy.plan import deploy_plan
from deepfleet.engines import get_adapter
from deepfleet.fleet.pools import NIXL_HOST_ENV
from deepfleet.fleet.ray.plans import plan_cluster
from deepfleet.fleet.state import NodeStatus
from tests.deploy.conftest import CASES, render_case
from tests.deploy.test_vllm_args import vllm_commands

R1_PD = """
cluster: {mode: kubernetes, nodes: 2, devices_per_node: 8, device: H200}
models:
  - name: deepseek-r1
    source: /models/deepseek-ai/DeepSeek-R1
    engine: vllm
    max_model_len: 16384
    disaggregation:
      prefill: {replicas: 1, tensor_parallel_size: 8, expert_parallel: true}
      decode: {replicas: 1, data_parallel_size: 8, expert_parallel: true}
gateway: {host: 0.0.0.0, port: 8000}
"""
DISTILL_PD = """
cluster: {mode: ray, nodes: 1, devices_per_node: 8, device: H200}
models:
  - name: r1-distill-7b
    source: /models/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
    engine: vllm
    max_model_len: 16384
    disaggregation:
      prefill: {replicas: 1, tensor_parallel_size: 2}
      decode: {replicas: 2}
gateway: {host: 0.0.0.0, port: 8000}
"""


def config(text: str) -> FleetConfig:
    return validate(yaml.safe_load(text), "test")


def kv(args: Any) -> Any:
    from vllm.config import KVTransferConfig

    value = args.kv_transfer_config
    return value if isinstance(value, KVTransferConfig) else KVTransferConfig(**json.loads(value))


def test_ascend_serve_script_starts_both_roles(vllm_parser: Any) -> None:
    commands = vllm_commands(render_case(CASES["ascend-2x8-pd"]).files)
    parsed = [vllm_parser.parse_args(argv) for argv in commands]
    assert [(kv(a).kv_role, a.tensor_parallel_size) for a in parsed] == [
        ("kv_producer", 2),
        ("kv_producer", 2),
        ("kv_consumer", 4),
    ]
    # vllm-ascend's own Mooncake connector (vLLM's MooncakeConnector is the CUDA one), each
    # engine with its engine_id and a kv_port range of its own (one port per rank), and both
    # pools' layouts, as vllm-ascend's multi-node P/D guide sets them.
    assert {kv(a).kv_connector for a in parsed} == {"MooncakeConnectorV1"}
    assert [(kv(a).engine_id, kv(a).kv_port) for a in parsed] == [
        ("0", 36000),
        ("1", 36002),
        ("2", 36004),
    ]
    layouts = {"prefill": {"dp_size": 1, "tp_size": 2}, "decode": {"dp_size": 1, "tp_size": 4}}
    for a in parsed:
        assert kv(a).kv_connector_extra_config == {"use_ascend_direct": True, **layouts}
    assert kv(parsed[2]).kv_load_failure_policy == "recompute"
    assert [a.port for a in parsed] == [8100, 8101, 8102]


def test_ray_launcher_gives_ascend_engines_the_same_ids(vllm_parser: Any) -> None:
    # `deepfleet up` in Ray mode on the same nodes numbers the engines as serve.sh does.
    cfg = config(CASES["ascend-2x8-pd"].text)
    npus = {"NPU": 8.0, "CPU": 96.0}
    nodes = [NodeStatus(f"n{i}", f"10.0.0.{i}", True, devices=npus, memory_bytes=2**40)
             for i in (1, 2)]  # fmt: skip
    found = []
    for plan, _ in plan_cluster(cfg, {"r1-distill-7b": "/models/r1"}, nodes):
        argv = get_adapter("vllm-ascend").launch_spec(plan).argv
        args = vllm_parser.parse_args(argv[argv.index("--model") :])
        found.append((plan.replica_id, kv(args).kv_connector, kv(args).engine_id, kv(args).kv_port))
    assert found == [
        ("r1-distill-7b-prefill-0", "MooncakeConnectorV1", "0", 36000),
        ("r1-distill-7b-prefill-1", "MooncakeConnectorV1", "1", 36002),
        ("r1-distill-7b-decode-0", "MooncakeConnectorV1", "2", 36004),
    ]


def test_k8s_head_starts_both_roles_with_their_layouts(vllm_parser: Any) -> None:
    cfg = config(R1_PD)
    bundle = render_k8s(deploy_plan(cfg), R1_PD)
    assert "disaggregation" in bundle.files["fleet.yaml"]
    gpus = {"GPU": 8.0, "CPU": 96.0}
    nodes = [NodeStatus(f"n{i}", f"10.0.0.{i}", True, devices=gpus, memory_bytes=2**40)
             for i in (1, 2)]  # fmt: skip
    placed = plan_cluster(cfg, {"deepseek-r1": "/models/deepseek-ai/DeepSeek-R1"}, nodes)
    plans = [plan for plan, _ in placed]
    assert [(p.replica_id, p.role) for p in plans] == [
        ("deepseek-r1-prefill-0", "prefill"),
        ("deepseek-r1-decode-0", "decode"),
    ]
    seen = []
    for plan in plans:
        argv = get_adapter("vllm").launch_spec(plan).argv
        args = vllm_parser.parse_args(argv[argv.index("--model") :])
        assert kv(args).kv_connector == "NixlConnector" and args.enable_expert_parallel
        seen.append(
            (kv(args).kv_role, args.tensor_parallel_size, args.data_parallel_size,
             args.all2all_backend)
        )  # fmt: skip
    assert seen == [
        ("kv_producer", 8, 1, "deepep_high_throughput"),
        ("kv_consumer", 1, 8, "deepep_low_latency"),
    ]


def test_compose_lists_the_roles_for_its_gateway(vllm_parser: Any) -> None:
    bundle = render_compose(deploy_plan(config(DISTILL_PD)), DISTILL_PD)
    state = json.loads(bundle.files["gateway/fleet.json"])
    assert [(r["replica_id"], r["role"]) for r in state["replicas"]] == [
        ("r1-distill-7b-prefill-0", "prefill"),
        ("r1-distill-7b-decode-0", "decode"),
        ("r1-distill-7b-decode-1", "decode"),
    ]
    assert [m["name"] for m in state["models"]] == ["r1-distill-7b"]
    services = yaml.safe_load(bundle.files["compose.yaml"])["services"]
    engines = {k: v for k, v in services.items() if k.startswith("engine-")}
    assert sorted(engines) == [
        "engine-r1-distill-7b-decode-0",
        "engine-r1-distill-7b-decode-1",
        "engine-r1-distill-7b-prefill-0",
    ]
    for name, service in engines.items():
        assert service["environment"][NIXL_HOST_ENV] == name
    roles = sorted(kv(vllm_parser.parse_args(argv)).kv_role for argv in vllm_commands(bundle.files))
    assert roles == ["kv_consumer", "kv_consumer", "kv_producer"]
