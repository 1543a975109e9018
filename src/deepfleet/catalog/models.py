"""Model facts: the architecture numbers the planner needs, from a `config.json` or the catalog.

`load_model_facts("deepseek-ai/DeepSeek-R1")` (or `"DeepSeek-R1"`, any case) reads the built-in
copy of the published config; `load_model_facts("/models/x")` reads `/models/x/config.json`.
Both go through `from_hf_config`, so the catalog is tested by the same code that reads folders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfleet.catalog.model_configs import BUILTIN_CONFIGS

# Architectures whose q/k/v projections carry a bias even though config.json does not say so.
_QKV_BIAS_BY_TYPE = frozenset({"qwen2"})


class ModelFactsError(ValueError):
    """The model cannot be described: unknown name, missing folder or unsupported config."""


@dataclass(frozen=True)
class MlaFacts:
    """Multi-head latent attention (DeepSeek-V2/V3): K and V are rebuilt from a shared latent.

    The KV cache holds only the latent (`kv_lora_rank`) and the decoupled RoPE key
    (`qk_rope_head_dim`) per token and layer, whatever the number of heads.
    """

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class MoeFacts:
    """Mixture of experts: `experts_per_token` of `routed_experts` plus the shared experts."""

    routed_experts: int
    experts_per_token: int
    shared_experts: int
    expert_intermediate_size: int
    first_dense_layers: int
    layer_freq: int = 1


@dataclass(frozen=True)
class ModelFacts:
    """One decoder-only transformer, as far as memory and bandwidth are concerned."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    shipped_format: str
    mla: MlaFacts | None = None
    moe: MoeFacts | None = None
    mtp_layers: int = 0

    @property
    def moe_layer_count(self) -> int:
        """Decoder layers whose MLP is a mixture of experts."""
        if self.moe is None:
            return 0
        m = self.moe
        return sum(1 for i in range(m.first_dense_layers, self.num_layers) if i % m.layer_freq == 0)

    @property
    def dense_layer_count(self) -> int:
        return self.num_layers - self.moe_layer_count


def shipped_format(config: Mapping[str, Any]) -> str:
    """The weight format a checkpoint ships in: bf16, fp16, fp8, int8 or int4."""
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        bits = quant.get("bits", quant.get("w_bit"))
        if method == "fp8":
            return "fp8"
        if method in {"awq", "gptq", "awq_marlin", "gptq_marlin"} and bits == 4:
            return "int4"
        if method in {"w8a8", "smoothquant"} or bits == 8:
            return "int8"
        raise ModelFactsError(f"unsupported quantization_config {dict(quant)!r}")
    dtype = str(config.get("torch_dtype", config.get("dtype", "bfloat16"))).lower()
    return {"float16": "fp16", "half": "fp16", "float32": "fp32"}.get(dtype, "bf16")


def _require(config: Mapping[str, Any], key: str, name: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or value <= 0:
        raise ModelFactsError(f"{name}: config.json needs a positive integer {key!r}")
    return value


def from_hf_config(config: Mapping[str, Any], name: str) -> ModelFacts:
    """Read the architecture from a Hugging Face `config.json` mapping."""
    hidden = _require(config, "hidden_size", name)
    heads = _require(config, "num_attention_heads", name)
    mla = None
    if config.get("kv_lora_rank"):
        mla = MlaFacts(
            q_lora_rank=config.get("q_lora_rank") or None,
            kv_lora_rank=int(config["kv_lora_rank"]),
            qk_nope_head_dim=int(config["qk_nope_head_dim"]),
            qk_rope_head_dim=int(config["qk_rope_head_dim"]),
            v_head_dim=int(config["v_head_dim"]),
        )
    moe = None
    # DeepSeek: n_routed_experts; Mixtral: num_local_experts (expert width = intermediate_size).
    routed = config.get("n_routed_experts") or config.get("num_local_experts")
    if routed:
        moe = MoeFacts(
            routed_experts=int(routed),
            experts_per_token=int(config["num_experts_per_tok"]),
            shared_experts=int(config.get("n_shared_experts") or 0),
            expert_intermediate_size=int(
                config.get("moe_intermediate_size") or config["intermediate_size"]
            ),
            first_dense_layers=int(config.get("first_k_dense_replace", 0)),
            layer_freq=int(config.get("moe_layer_freq", 1)),
        )
    model_type = str(config.get("model_type", "unknown"))
    return ModelFacts(
        name=name,
        model_type=model_type,
        hidden_size=hidden,
        num_layers=_require(config, "num_hidden_layers", name),
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=_require(config, "intermediate_size", name),
        vocab_size=_require(config, "vocab_size", name),
        max_position_embeddings=int(config.get("max_position_embeddings") or 4096),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=bool(config.get("attention_bias", model_type in _QKV_BIAS_BY_TYPE)),
        shipped_format=shipped_format(config),
        mla=mla,
        moe=moe,
        mtp_layers=int(config.get("num_nextn_predict_layers") or 0),
    )


def _catalog_key(name: str) -> str | None:
    wanted = name.strip().lower()
    for key in BUILTIN_CONFIGS:
        if wanted in (key.lower(), key.split("/", 1)[1].lower()):
            return key
    return None


def load_model_facts(name_or_path: str) -> ModelFacts:
    """Facts for a catalog name (hub id or its last part, any case) or a folder with config.json.

    A local folder wins over a catalog name of the same spelling. Raises ModelFactsError
    with the catalog's names when neither matches.
    """
    path = Path(name_or_path).expanduser()
    config_file = path / "config.json" if path.is_dir() else path
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelFactsError(f"cannot read {config_file}: {exc}") from exc
        if not isinstance(config, dict):
            raise ModelFactsError(f"{config_file} does not hold a JSON object")
        label = path.name if path.is_dir() else path.parent.name
        return from_hf_config(config, label)
    if path.is_dir():
        raise ModelFactsError(f"{path} holds no config.json")
    key = _catalog_key(name_or_path)
    if key is None:
        known = ", ".join(k.split("/", 1)[1] for k in BUILTIN_CONFIGS)
        raise ModelFactsError(
            f"unknown model {name_or_path!r}: give a folder holding config.json or one of {known}"
        )
    return from_hf_config(BUILTIN_CONFIGS[key], key)
