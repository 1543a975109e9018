"""Memory per device, checked against what vLLM 0.26 measured on the H200."""

from __future__ import annotations

from dataclasses import replace

import pytest

from deepfleet.catalog.hardware import GiB, get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.planner import ClusterShape, PlanRequest, get_format, model_weight_bytes, plan
from deepfleet.planner.kv import GPU_BLOCK_SIZE, kv_capacity
from deepfleet.planner.memory import (
    NON_TORCH_BYTES,
    DeviceMemory,
    MemoryInputs,
    Parallelism,
    cudagraph_capture_sizes,
    cudagraph_estimate_bytes,
    device_memory,
    mla_profile_bytes,
    moe_workspace_bytes,
    stage_weight_bytes,
)
from deepfleet.planner.params import inventory
from tests.planner.measured import deepseek_v3_cut, qwen2_7b_measured

H200_DEFAULTS = MemoryInputs(utilization=0.92, batched_tokens=8192, max_num_seqs=1024)

# What vLLM 0.26 logged on the lent H200 (total 150,109,880,320 bytes, utilization 0.92, 8,192
# batched tokens, 1,024 sequences, dummy weights): benchmarks/results/gpu/planner-qwen2-7b.json
# and planner-dsv3-8l.json ("startup"), and the engine's memory line ("Actual usage is ... for
# weight, ... for peak activation, ... for non-torch memory") and "Estimated CUDA graph memory".
TARGET = 0.03
QWEN2_7B = {"max_model_len": 4096, "kv_gib": 114.38, "kv_tokens": 2_141_792, "activation_gib": 1.06}
DSV3_CUT = {
    "max_model_len": 8192,
    "kv_gib": 59.15,
    "kv_tokens": 6_892_032,
    "activation_gib": 8.18,
    "graph_estimate_gib": 4.23,
}


def _h200(m: ModelFacts, fmt_name: str | None, shipped: str, max_model_len: int) -> DeviceMemory:
    inputs = replace(H200_DEFAULTS, max_model_len=max_model_len)
    return device_memory(
        m, get_format(fmt_name, shipped), get_device("H200"), Parallelism(), inputs
    )


def _tokens(mem: DeviceMemory, max_model_len: int) -> int:
    return kv_capacity(mem.kv, mem.kv_bytes_per_token, GPU_BLOCK_SIZE, max_model_len).tokens


def test_h200_total_is_the_measured_one() -> None:
    assert get_device("H200").memory_bytes == 150_109_880_320


def test_qwen2_7b_on_h200_kv_within_3_percent_of_vllm() -> None:
    mem = _h200(qwen2_7b_measured(), "bf16", "bf16", QWEN2_7B["max_model_len"])
    assert abs(mem.weights / GiB - 12.94) / 12.94 < 0.015
    assert (
        abs(mem.activation / GiB - QWEN2_7B["activation_gib"]) / QWEN2_7B["activation_gib"] < 0.05
    )
    # Dense: the V2 model runner, whose graphs are not taken from the KV budget.
    assert mem.reserve == NON_TORCH_BYTES
    assert abs(mem.kv / GiB - QWEN2_7B["kv_gib"]) / QWEN2_7B["kv_gib"] < TARGET
    tokens = _tokens(mem, QWEN2_7B["max_model_len"])
    assert abs(tokens - QWEN2_7B["kv_tokens"]) / QWEN2_7B["kv_tokens"] < TARGET


def test_deepseek_v3_cut_on_h200_kv_within_3_percent_of_vllm() -> None:
    m = deepseek_v3_cut()
    mem = _h200(m, None, "fp8", DSV3_CUT["max_model_len"])
    assert abs(mem.weights / GiB - 56.83) / 56.83 < 0.01
    graphs = mem.reserve - NON_TORCH_BYTES
    assert (
        abs(graphs / GiB - DSV3_CUT["graph_estimate_gib"]) / DSV3_CUT["graph_estimate_gib"] < 0.01
    )
    # The profile peak is under-predicted (6.85 vs 8.18 GiB; docs/planner.md says what is known).
    assert 0.8 < mem.activation / GiB / DSV3_CUT["activation_gib"] < 1.0
    assert abs(mem.kv / GiB - DSV3_CUT["kv_gib"]) / DSV3_CUT["kv_gib"] < TARGET
    tokens = _tokens(mem, DSV3_CUT["max_model_len"])
    assert abs(tokens - DSV3_CUT["kv_tokens"]) / DSV3_CUT["kv_tokens"] < TARGET


def test_plan_for_the_h200_runs_passes_the_context_to_the_memory_model() -> None:
    for m, length, tokens in (
        (qwen2_7b_measured(), QWEN2_7B["max_model_len"], QWEN2_7B["kv_tokens"]),
        (deepseek_v3_cut(), DSV3_CUT["max_model_len"], DSV3_CUT["kv_tokens"]),
    ):
        request = PlanRequest(
            max_model_len=length, gpu_memory_utilization=0.92, parallel=Parallelism()
        )
        result = plan(m, ClusterShape(get_device("H200")), request)
        layout = result.recommended or result.layouts[0]
        assert abs(layout.kv_tokens - tokens) / tokens < TARGET


def test_mla_profile_tensor_is_the_context_up_projection_worst_case() -> None:
    m = deepseek_v3_cut()
    # 64 Ki workspace tokens x 128 heads x (128 nope + 128 v) x bf16 = 4 GiB.
    assert mla_profile_bytes(m, Parallelism(), 8192, 1024) == 4 * GiB
    assert mla_profile_bytes(m, Parallelism(tp=8), 8192, 1024) == GiB // 2
    # Short contexts and few sequences shrink the workspace: max(8 x 1024, 4 x 16 x 16) tokens.
    assert mla_profile_bytes(m, Parallelism(), 1024, 16) == 8192 * 128 * 256 * 2
    assert mla_profile_bytes(qwen2_7b_measured(), Parallelism(), 8192, 1024) == 0


def test_moe_workspace_is_two_tokens_x_topk_x_hidden_buffers() -> None:
    m = deepseek_v3_cut()
    assert moe_workspace_bytes(m, Parallelism(), 8192) == 2 * 8192 * 8 * 7168 * 2
    assert moe_workspace_bytes(qwen2_7b_measured(), Parallelism(), 8192) == 0


def test_cuda_graph_sizes_and_runner_choice() -> None:
    assert len(cudagraph_capture_sizes(1024, 8192)) == 51
    assert cudagraph_capture_sizes(1024, 8192)[-1] == 512
    assert cudagraph_capture_sizes(8, 8192) == [1, 2, 4, 8, 16]
    m = deepseek_v3_cut()
    assert cudagraph_estimate_bytes(qwen2_7b_measured(), Parallelism(), 0, 1024, 8192) == 0
    full = cudagraph_estimate_bytes(m, Parallelism(), 0, 1024, 8192)
    assert full == pytest.approx(4.23 * GiB, rel=1e-6)
    eager = replace(H200_DEFAULTS, enforce_eager=True, max_model_len=8192)
    mem = device_memory(m, get_format(None, "fp8"), get_device("H200"), Parallelism(), eager)
    assert mem.reserve == NON_TORCH_BYTES


@pytest.mark.parametrize(("name", "pp"), [("DeepSeek-R1-Distill-Llama-8B", 4), ("DeepSeek-R1", 5)])
def test_stages_hold_every_weight_once(name: str, pp: int) -> None:
    m = load_model_facts(name)
    fmt = get_format(None, m.shipped_format)
    inv = inventory(m)
    par = Parallelism(pp=pp)
    stages = sum(stage_weight_bytes(m, inv, fmt, par, s, mtp=False) for s in range(pp))
    assert stages == model_weight_bytes(m, fmt)


def test_tied_embeddings_are_copied_to_the_last_stage() -> None:
    m = load_model_facts("SmolLM2-135M-Instruct")
    fmt, inv = get_format("bf16", "bf16"), inventory(m)
    both = sum(stage_weight_bytes(m, inv, fmt, Parallelism(pp=2), s, False) for s in range(2))
    assert both == model_weight_bytes(m, fmt) + m.vocab_size * m.hidden_size * 2


def test_mla_down_projections_are_replicated_across_tp() -> None:
    m = load_model_facts("DeepSeek-R1")
    fmt, inv = get_format("bf16", "bf16"), inventory(m)
    one = stage_weight_bytes(m, inv, fmt, Parallelism(tp=1), 0, False)
    eight = stage_weight_bytes(m, inv, fmt, Parallelism(tp=8), 0, False)
    replicated = 61 * 2 * 7168 * (1536 + 576)  # q_a_proj and kv_a_proj_with_mqa, bf16
    assert eight > one / 8 + 7 / 8 * replicated * 0.99


def test_mtp_layer_adds_to_the_last_stage() -> None:
    m = load_model_facts("DeepSeek-R1")
    fmt, inv, par = get_format(None, "fp8"), inventory(m), Parallelism(tp=8, pp=2)
    without = stage_weight_bytes(m, inv, fmt, par, 1, mtp=False)
    with_mtp = stage_weight_bytes(m, inv, fmt, par, 1, mtp=True)
    # By hand, bytes per TP rank: 256 experts 11.27e9 fp8 / 8 = 1.409e9; eh_proj (7168 x 14336,
    # bf16, replicated) 0.206e9; q_b/kv_b/o 171.9e6 fp8 / 8 = 0.021e9; q_a/kv_a replicated
    # 0.015e9; shared expert and router 0.009e9: about 1.66e9.
    assert with_mtp - without == pytest.approx(1.66e9, rel=0.01)


def test_kv_heads_replicate_beyond_their_count() -> None:
    m = load_model_facts("DeepSeek-R1-Distill-Qwen-7B")  # 4 KV heads
    fmt, inv = get_format("bf16", "bf16"), inventory(m)
    tp4 = stage_weight_bytes(m, inv, fmt, Parallelism(tp=4), 0, False)
    tp8 = stage_weight_bytes(m, inv, fmt, Parallelism(tp=8), 0, False)
    kv_proj = 28 * 2 * (512 * 3584 + 512) * 2  # k and v projections with bias, bf16
    # From TP 4 to 8 everything halves except k/v, which stay at one head per rank.
    assert tp8 - tp4 / 2 == pytest.approx(kv_proj / 8, rel=0.01)
