"""Memory per device, checked against what vLLM 0.26 measured on the H200."""

from __future__ import annotations

import pytest

from deepfleet.catalog.hardware import GiB, get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import get_format, model_weight_bytes
from deepfleet.planner.memory import (
    MemoryInputs,
    Parallelism,
    device_memory,
    stage_weight_bytes,
)
from deepfleet.planner.params import inventory
from tests.planner.measured import deepseek_v3_cut, qwen2_7b_measured

H200_DEFAULTS = MemoryInputs(utilization=0.92, batched_tokens=8192, max_num_seqs=1024)


def test_qwen2_7b_on_h200_matches_vllm() -> None:
    mem = device_memory(
        qwen2_7b_measured(),
        get_format("bf16", "bf16"),
        get_device("H200"),
        Parallelism(),
        H200_DEFAULTS,
    )
    assert abs(mem.weights / GiB - 12.91) / 12.91 < 0.01
    assert abs(mem.activation / GiB - 1.12) / 1.12 < 0.05
    tokens = mem.kv // mem.kv_bytes_per_token
    assert abs(tokens - 2_141_248) / 2_141_248 < 0.01


def test_deepseek_v3_cut_on_h200_is_close_and_on_the_safe_side() -> None:
    m = deepseek_v3_cut()
    mem = device_memory(
        m, get_format(None, "fp8"), get_device("H200"), Parallelism(), H200_DEFAULTS
    )
    assert abs(mem.weights / GiB - 56.83) / 56.83 < 0.01
    assert abs(mem.activation / GiB - 9.47) / 9.47 < 0.05
    tokens = mem.kv // mem.kv_bytes_per_token
    assert 0.9 * 6_741_216 < tokens <= 6_741_216


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
