"""KV bytes per token (hand-checked) and vLLM's block accounting."""

from __future__ import annotations

import pytest

from deepfleet.catalog.hardware import GiB
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner.kv import (
    cpu_kv_capacity,
    kv_bytes_per_token,
    kv_capacity,
    stage_layers,
)
from tests.planner.measured import deepseek_v3_cut, qwen2_7b_measured

R1 = "DeepSeek-R1"


@pytest.mark.parametrize(
    ("model", "dtype_bytes", "tp", "pp", "expected"),
    [
        (R1, 2, 1, 1, 576 * 61 * 2),  # 70,272: the MLA latent + RoPE key, every layer
        (R1, 2, 8, 1, 576 * 61 * 2),  # TP does not split the latent
        (R1, 1, 8, 1, 576 * 61),  # fp8 KV halves it
        (R1, 2, 8, 2, 576 * 31 * 2),  # PP: the busiest stage holds 31 of 61 layers
        ("DeepSeek-R1-Distill-Qwen-7B", 2, 1, 1, 2 * 28 * 4 * 128 * 2),
        ("DeepSeek-R1-Distill-Qwen-7B", 2, 2, 1, 2 * 28 * 2 * 128 * 2),  # 2 of 4 heads per rank
        ("DeepSeek-R1-Distill-Qwen-7B", 2, 8, 1, 2 * 28 * 1 * 128 * 2),  # replicated past 4
        ("DeepSeek-R1-Distill-Llama-8B", 2, 1, 1, 2 * 32 * 8 * 128 * 2),
        ("DeepSeek-R1-Distill-Llama-70B", 1, 8, 1, 2 * 80 * 1 * 128 * 1),
        ("SmolLM2-135M-Instruct", 2, 1, 1, 2 * 30 * 3 * 64 * 2),
    ],
)
def test_kv_bytes_per_token(model: str, dtype_bytes: int, tp: int, pp: int, expected: int) -> None:
    assert kv_bytes_per_token(load_model_facts(model), dtype_bytes, tp, pp) == expected


def test_kv_per_token_matches_what_vllm_measured() -> None:
    # H200, vLLM 0.26: 114.36 GiB = 2,141,248 tokens, 57,344 bytes per token; the V3 cut
    # cached 1,152 bytes per token per layer.
    assert kv_bytes_per_token(qwen2_7b_measured(), 2) == 57_344
    assert kv_bytes_per_token(deepseek_v3_cut(), 2) == 1_152 * 8


@pytest.mark.parametrize(
    ("layers", "pp", "expected"),
    [
        (61, 1, (61,)),
        (61, 2, (31, 30)),  # vLLM gives the remainder to the stages before the last
        (61, 8, (7, 7, 8, 8, 8, 8, 8, 7)),
        (28, 3, (9, 10, 9)),
        (80, 8, (10,) * 8),
    ],
)
def test_stage_layers_follow_vllm(layers: int, pp: int, expected: tuple[int, ...]) -> None:
    assert stage_layers(layers, pp) == expected


def test_more_stages_than_layers_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds the 4 layers"):
        stage_layers(4, 5)


@pytest.mark.parametrize(
    ("budget", "per_token", "block", "max_len", "blocks", "logged"),
    [
        # 1 GiB for SmolLM2 (23,040 B/token), block 128: 1073741824 // 2949120 = 364 blocks.
        (GiB, 23_040, 128, 2048, 364, 364 * 128),
        # max_model_len not a block multiple: 16 blocks per sequence, 364/16 x 2000 tokens.
        (GiB, 23_040, 128, 2000, 364, 45_500),
        (10 * 70_272 * 16, 70_272, 16, 160, 10, 160),
        (-5, 100, 16, 16, 0, 0),
    ],
)
def test_kv_capacity_counts_like_vllm(
    budget: int, per_token: int, block: int, max_len: int, blocks: int, logged: int
) -> None:
    cap = kv_capacity(budget, per_token, block, max_len)
    assert (cap.num_blocks, cap.tokens, cap.logged_tokens) == (blocks, blocks * block, logged)


def test_cpu_capacity_uses_block_128_and_16_for_mla() -> None:
    smol = cpu_kv_capacity(load_model_facts("SmolLM2-135M-Instruct"), 1, 2048)
    assert (smol.block_size, smol.tokens) == (128, 46_592)
    assert cpu_kv_capacity(load_model_facts(R1), 1, 2048).block_size == 16
