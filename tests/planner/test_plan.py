"""plan(): the reference plan, Ascend, infeasible requests and their alternatives."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.planner import ClusterShape, Parallelism, Plan, PlanRequest, plan

R1 = load_model_facts("DeepSeek-R1")
REFERENCE = ClusterShape(get_device("A100-40GB"), nodes=8, devices_per_node=8)


def _plan(fmt: str | None = None, cluster: ClusterShape = REFERENCE, **kw: object) -> Plan:
    return plan(R1, cluster, PlanRequest(weight_format=fmt, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", [None, "bf16", "int8", "int4"])
def test_reference_plan_fits_every_nvidia_format(fmt: str | None) -> None:
    result = _plan(fmt)
    best = result.recommended
    assert best is not None and best.feasible
    assert best.tp == 8 and best.devices_used <= 64  # TP inside a node, PP across nodes
    assert best.max_model_len == 32_768 and best.max_concurrency >= 1
    assert best.memory.weights + best.memory.activation + best.memory.reserve < best.memory.budget


def test_reference_bf16_needs_six_nodes_per_replica() -> None:
    # 1,342 GB of bf16 weights over 8 x 40 GB per node: at least 6 stages of TP 8.
    result = _plan("bf16")
    fitting = [x for x in result.layouts if x.feasible]
    assert fitting and min(x.devices_per_replica for x in fitting) == 48
    too_small = next(x for x in result.layouts if (x.tp, x.pp) == (8, 4))
    assert not too_small.feasible and "weights need" in too_small.reason


def test_reference_fp8_recommendation_explains_itself() -> None:
    result = _plan()
    best = result.recommended
    assert best is not None and result.weight_format.name == "fp8"
    assert any("Marlin" in note for note in best.notes)  # A100: no FP8 tensor cores
    one_node = next(x for x in result.layouts if (x.tp, x.pp, x.attn_dp) == (8, 1, 1))
    assert not one_node.feasible and "GiB per device" in one_node.reason
    # The KV held by the recommendation is what is left of each device after the rest.
    per_device = best.memory.budget - best.memory.weights - best.memory.activation
    assert best.kv_budget == per_device - best.memory.reserve
    assert best.kv_tokens // best.max_model_len == best.max_concurrency


def test_single_replica_gives_way_to_two_when_nearly_as_fast() -> None:
    result = _plan()
    fastest = max((x for x in result.layouts if x.feasible), key=lambda x: x.decode_tokens_per_s)
    best = result.recommended
    assert best is not None
    if fastest.dp == 1:
        assert best.dp > 1 and best.decode_tokens_per_s >= 0.85 * fastest.decode_tokens_per_s


def test_ascend_plans_r1_in_w8a8_over_two_nodes() -> None:
    ascend = ClusterShape(get_device("Ascend-910B"), nodes=2, devices_per_node=8)
    result = _plan("int8", ascend)
    assert result.recommended is not None
    assert (result.recommended.tp, result.recommended.pp) == (8, 2)
    assert result.recommended.gpu_memory_utilization == 0.9


def test_ascend_refuses_fp8_and_points_to_w8a8() -> None:
    ascend = ClusterShape(get_device("Ascend-910B"), nodes=2, devices_per_node=8)
    result = _plan(None, ascend)
    assert result.recommended is None
    assert all("int8 (W8A8)" in x.reason for x in result.layouts)
    assert [a.weight_format for a in result.alternatives][:1] == ["int8"]


def test_alternatives_on_many_nodes_keep_a_layer_per_stage() -> None:
    # 8 x 8 910B with R1's fp8 checkpoint: the alternatives plan 16 to 64 nodes, whose
    # one-stage-per-node layouts once reached 62+ stages for 61 layers and raised.
    ascend = ClusterShape(get_device("Ascend-910B"), nodes=8, devices_per_node=8)
    result = _plan(None, ascend)
    assert result.recommended is None and result.alternatives
    assert all(a.layout.pp <= R1.num_layers for a in result.alternatives)


def test_infeasible_request_offers_nearest_alternatives() -> None:
    one_node = ClusterShape(get_device("H100"), nodes=1, devices_per_node=8)
    result = _plan("bf16", one_node, max_model_len=32_768)
    assert result.recommended is None
    changes = {a.change.split(" (")[0]: a for a in result.alternatives}
    assert "weights in int4" in changes
    nodes = next(a for a in result.alternatives if "nodes of 8 x H100" in a.change)
    assert nodes.layout.feasible and nodes.layout.devices_used > 8


def test_a_too_long_context_is_refused_with_the_kv_room() -> None:
    cluster = ClusterShape(get_device("H200"), nodes=1, devices_per_node=8)
    result = _plan(None, cluster, max_model_len=163_840, concurrency=64)
    assert result.recommended is None
    assert any("concurrent" in x.reason for x in result.layouts)
    assert any(a.change.startswith("max_model_len") for a in result.alternatives)


QWEN_1_5B = load_model_facts("DeepSeek-R1-Distill-Qwen-1.5B")
SIX_KV_HEADS = replace(QWEN_1_5B, num_heads=24, num_kv_heads=6, head_dim=64)


@pytest.mark.parametrize(
    ("model", "fmt", "tp", "reason"),
    [
        (QWEN_1_5B, "bf16", 8, "does not divide the 12 attention heads"),
        (QWEN_1_5B, "int4", 4, "8960 / 4 = 2240 is not"),  # not a multiple of 128
        (SIX_KV_HEADS, "bf16", 4, "the 6 KV heads do not divide"),
    ],
)
def test_shape_problems_are_named(model: ModelFacts, fmt: str, tp: int, reason: str) -> None:
    cluster = ClusterShape(get_device("L40S"), nodes=1, devices_per_node=8)
    request = PlanRequest(weight_format=fmt, parallel=Parallelism(tp=tp))
    result = plan(model, cluster, request)
    assert result.recommended is None and reason in result.layouts[0].reason
    assert any("parallel: auto" in a.change for a in result.alternatives)


def test_bundled_model_on_the_cpu() -> None:
    cpu = ClusterShape(get_device("CPU"))
    result = plan(load_model_facts("SmolLM2-135M-Instruct"), cpu, PlanRequest(cpu_kv_space_gib=1))
    best = result.recommended
    assert best is not None and best.gpu_memory_utilization is None
    assert best.kv_cache_space_gib == 1 and best.block_size == 128
    assert best.kv_tokens == (1 << 30) // (128 * 23_040) * 128
    assert best.max_model_len == 8192  # the model's own limit, below 32K
    assert "gpu_memory_utilization" not in best.engine_args()


def test_cpu_kv_space_beyond_the_host_is_refused() -> None:
    cpu = ClusterShape(get_device("CPU"))
    result = plan(load_model_facts("SmolLM2-135M-Instruct"), cpu, PlanRequest(cpu_kv_space_gib=64))
    assert result.recommended is None and "VLLM_CPU_KVCACHE_SPACE=64" in result.layouts[0].reason


def test_fixed_layout_fills_engine_arguments() -> None:
    cluster = ClusterShape(get_device("H200"), nodes=1, devices_per_node=8)
    request = PlanRequest(parallel=Parallelism(tp=8), max_model_len=16_384)
    best = plan(R1, cluster, request).recommended
    assert best is not None
    args = best.engine_args()
    assert args["tensor_parallel_size"] == 8 and args["pipeline_parallel_size"] == 1
    assert args["max_model_len"] == 16_384 and args["gpu_memory_utilization"] == 0.92
    assert 1 <= int(args["max_num_seqs"]) <= 1024
