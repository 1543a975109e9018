"""Built-in `config.json` contents for the models deepfleet plans without a model hub.

Each entry holds only the architecture keys of the published Hugging Face `config.json`
(same key names, same values), so the catalog and a local folder go through one parser.
Sources: the `config.json` of each repository on huggingface.co (deepseek-ai/*, and
HuggingFaceTB/SmolLM2-135M-Instruct for the bundled demo model).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

_DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 61,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 256,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "moe_layer_freq": 1,
    "topk_method": "noaux_tc",
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "num_nextn_predict_layers": 1,
    "vocab_size": 129280,
    "max_position_embeddings": 163840,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": [128, 128],
    },
}


def _qwen2(hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


def _llama(hidden: int, inter: int, layers: int, heads: int, kv: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }


_SMOLLM2_135M: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "attention_bias": False,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

BUILTIN_CONFIGS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "deepseek-ai/DeepSeek-R1": _DEEPSEEK_V3,
        "deepseek-ai/DeepSeek-R1-0528": _DEEPSEEK_V3,
        "deepseek-ai/DeepSeek-V3": _DEEPSEEK_V3,
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": _qwen2(3584, 18944, 28, 28, 4, 152064),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": _qwen2(5120, 13824, 48, 40, 8, 152064),
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": _qwen2(5120, 27648, 64, 40, 8, 152064),
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": _llama(4096, 14336, 32, 32, 8),
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": _llama(8192, 28672, 80, 64, 8),
        "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
    }
)
