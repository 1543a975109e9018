"""Models measured with real vLLM 0.26 on the lent H200 (shared/gpu/README.md), as configs."""

from __future__ import annotations

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS
from deepfleet.catalog.models import ModelFacts, from_hf_config


def qwen2_7b_measured() -> ModelFacts:
    """Qwen2 architecture, hidden 3584, 28 layers, 28 heads, 4 KV heads, vocab 49152."""
    config = dict(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"])
    config["vocab_size"] = 49152
    return from_hf_config(config, "qwen2-7b-measured")


def deepseek_v3_cut() -> ModelFacts:
    """The DeepSeek-V3 config cut to 8 layers (3 dense + 5 MoE), vocab 49152, fp8 blocks."""
    config = dict(BUILTIN_CONFIGS["deepseek-ai/DeepSeek-V3"])
    config.update(vocab_size=49152, num_hidden_layers=8)
    return from_hf_config(config, "deepseek-v3-cut")
