"""Model facts: parameter counts from the architecture against the published sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS
from deepfleet.catalog.models import (
    ModelFactsError,
    from_hf_config,
    load_model_facts,
    shipped_format,
)
from deepfleet.planner import count_params

# Published sizes: the model cards / Hugging Face parameter counts of each repository.
PUBLISHED = [
    ("deepseek-ai/DeepSeek-R1", 671e9),
    ("deepseek-ai/DeepSeek-R1-0528", 671e9),
    ("deepseek-ai/DeepSeek-V3", 671e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.78e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 7.62e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-8B", 8.03e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14.8e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32.8e9),
    ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 70.6e9),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 135e6),
]


@pytest.mark.parametrize(("name", "published"), PUBLISHED)
def test_parameter_count_within_one_percent_of_published(name: str, published: float) -> None:
    total = count_params(load_model_facts(name)).total
    assert abs(total - published) / published < 0.01


def test_r1_mtp_active_and_checkpoint_totals() -> None:
    m = load_model_facts("DeepSeek-R1")
    p = count_params(m)
    # DeepSeek: "MTP module ~11.5B"; "37B activated per token"; the checkpoint's 685B holds
    # the main model, the MTP layer and MTP's own copies of the embedding and the head.
    assert abs(p.mtp - 11.5e9) / 11.5e9 < 0.015
    assert abs(p.active - 37e9) / 37e9 < 0.02
    checkpoint = p.total + p.mtp + 2 * m.vocab_size * m.hidden_size
    assert abs(checkpoint - 685e9) / 685e9 < 0.005


def _v2_lite() -> dict[str, Any]:
    return {
        "model_type": "deepseek_v2",
        "hidden_size": 2048,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "kv_lora_rank": 512,
        "q_lora_rank": None,
        "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "intermediate_size": 10944,
        "moe_intermediate_size": 1408,
        "n_routed_experts": 64,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "first_k_dense_replace": 1,
        "vocab_size": 102400,
    }


def _mixtral() -> dict[str, Any]:
    return {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 32000,
    }


@pytest.mark.parametrize(
    ("config", "total", "active"),
    [
        (_v2_lite(), 15.7e9, 2.4e9),  # MLA without q_lora, 2 shared experts
        (_mixtral(), 46.7e9, 12.9e9),  # num_local_experts, experts as wide as the dense MLP
    ],
)
def test_configs_outside_the_catalog(config: dict[str, Any], total: float, active: float) -> None:
    p = count_params(from_hf_config(config, "x"))
    assert abs(p.total - total) / total < 0.01
    assert abs(p.active - active) / active < 0.03


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"torch_dtype": "bfloat16"}, "bf16"),
        ({"torch_dtype": "float16"}, "fp16"),
        ({}, "bf16"),
        ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}, "fp8"),
        ({"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}, "int4"),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "int4"),
        ({"quantization_config": {"quant_method": "w8a8"}}, "int8"),
    ],
)
def test_shipped_format(config: dict[str, Any], expected: str) -> None:
    assert shipped_format(config) == expected


def test_unknown_quantization_is_an_error() -> None:
    with pytest.raises(ModelFactsError, match="unsupported quantization_config"):
        shipped_format({"quantization_config": {"quant_method": "bitnet"}})


@pytest.mark.parametrize("spelling", ["DeepSeek-R1", "deepseek-r1", "deepseek-ai/DeepSeek-R1"])
def test_catalog_lookup_ignores_case_and_owner(spelling: str) -> None:
    assert load_model_facts(spelling).name == "deepseek-ai/DeepSeek-R1"


def test_catalog_holds_r1_v3_and_six_distills() -> None:
    names = tuple(BUILTIN_CONFIGS)
    assert {
        "deepseek-ai/DeepSeek-R1",
        "deepseek-ai/DeepSeek-R1-0528",
        "deepseek-ai/DeepSeek-V3",
    } <= set(names)
    assert sum("Distill" in n for n in names) == 6
    r1 = load_model_facts("DeepSeek-R1")
    assert r1.mla is not None and r1.moe is not None
    assert (r1.dense_layer_count, r1.moe_layer_count) == (3, 58)
    assert r1.shipped_format == "fp8"


def test_folder_with_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(_mixtral()))
    m = load_model_facts(str(tmp_path))
    assert m.name == tmp_path.name and m.moe is not None and m.num_kv_heads == 8


def test_qwen2_has_qkv_bias_and_llama_not() -> None:
    assert load_model_facts("DeepSeek-R1-Distill-Qwen-7B").qkv_bias
    assert not load_model_facts("DeepSeek-R1-Distill-Llama-8B").qkv_bias


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "holds no config.json"),
        (lambda p: Path("no-such-model-anywhere"), "unknown model .* DeepSeek-R1"),
    ],
)
def test_errors_say_what_to_give(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(ModelFactsError, match=message):
        load_model_facts(str(make(tmp_path)))


def test_config_without_required_key_names_it() -> None:
    with pytest.raises(ModelFactsError, match="'vocab_size'"):
        from_hf_config({k: v for k, v in _mixtral().items() if k != "vocab_size"}, "x")
