"""The tensor inventory of a model: every weight matrix and vector, its shape and its sharding.

Parameter counts, weight bytes per format and per-device shards all sum over this one list,
so the three cannot disagree. Shapes follow vLLM's modules (rows = output features):

- GQA/MHA attention: q (heads x head_dim), k and v (kv_heads x head_dim), o; optional q/k/v bias.
- MLA (DeepSeek-V3): q_a (q_lora_rank) and kv_a (kv_lora_rank + rope) are *replicated* on
  every TP rank (vLLM's ReplicatedLinear); q_b, kv_b and o are split by heads.
- MLP: gate+up (2 x intermediate) and down; MoE: routed experts (whole experts per EP rank,
  or each expert split by TP: the bytes per device are the same), shared experts split like a
  dense MLP, the router gate replicated and unquantized.
- Embeddings and lm_head are vocab-parallel (split by TP), on the first and last PP stage.
- The MTP module (DeepSeek's next-token predictor) is an extra MoE layer plus eh_proj and two
  norms; it shares the embedding and head, and vLLM loads it only for speculative decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from deepfleet.catalog.models import ModelFacts


class Shard(Enum):
    """How a tensor is divided among the devices of one pipeline stage."""

    SPLIT = "split"  # divided by TP (column or row parallel, or vocab parallel)
    REPLICATED = "replicated"  # whole on every rank
    KV_HEADS = "kv_heads"  # split by TP while kv_heads >= TP, then one head per rank
    EXPERT = "expert"  # divided among the expert-parallel (or TP) group


@dataclass(frozen=True)
class Tensor:
    """`count` copies of a (rows x cols) tensor; vectors have cols == 1."""

    name: str
    rows: int
    cols: int
    shard: Shard
    quantizable: bool
    count: int = 1

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count


@dataclass(frozen=True)
class Inventory:
    """Tensors grouped by where they live: first stage, last stage, each layer kind, MTP."""

    embed: tuple[Tensor, ...]
    head: tuple[Tensor, ...]
    dense_layer: tuple[Tensor, ...]
    moe_layer: tuple[Tensor, ...]
    dense_layers: int
    moe_layers: int
    mtp_extra: tuple[Tensor, ...]
    mtp_layers: int


@dataclass(frozen=True)
class ParamCount:
    """Parameters of the served model (`total`) and of the MTP module counted apart."""

    embedding: int
    attention: int
    mlp: int
    norms: int
    lm_head: int
    total: int
    active: int
    """Parameters read for one token: all but the routed experts not chosen and the
    embedding table (one row is read; a tied table is read whole as the lm_head)."""
    mtp: int


def _attention(m: ModelFacts) -> list[Tensor]:
    h = m.hidden_size
    if m.mla is None:
        q, kv = m.num_heads * m.head_dim, m.num_kv_heads * m.head_dim
        tensors = [
            Tensor("q_proj", q, h, Shard.SPLIT, True),
            Tensor("k_proj", kv, h, Shard.KV_HEADS, True),
            Tensor("v_proj", kv, h, Shard.KV_HEADS, True),
            Tensor("o_proj", h, q, Shard.SPLIT, True),
        ]
        if m.qkv_bias:
            tensors += [
                Tensor("q_bias", q, 1, Shard.SPLIT, False),
                Tensor("kv_bias", 2 * kv, 1, Shard.KV_HEADS, False),
            ]
        return tensors
    a = m.mla
    qk_head = a.qk_nope_head_dim + a.qk_rope_head_dim
    if a.q_lora_rank:
        q_tensors = [
            Tensor("q_a_proj", a.q_lora_rank, h, Shard.REPLICATED, True),
            Tensor("q_a_layernorm", a.q_lora_rank, 1, Shard.REPLICATED, False),
            Tensor("q_b_proj", m.num_heads * qk_head, a.q_lora_rank, Shard.SPLIT, True),
        ]
    else:
        q_tensors = [Tensor("q_proj", m.num_heads * qk_head, h, Shard.SPLIT, True)]
    return [
        *q_tensors,
        Tensor(
            "kv_a_proj_with_mqa", a.kv_lora_rank + a.qk_rope_head_dim, h, Shard.REPLICATED, True
        ),
        Tensor("kv_a_layernorm", a.kv_lora_rank, 1, Shard.REPLICATED, False),
        Tensor(
            "kv_b_proj",
            m.num_heads * (a.qk_nope_head_dim + a.v_head_dim),
            a.kv_lora_rank,
            Shard.SPLIT,
            True,
        ),
        Tensor("o_proj", h, m.num_heads * a.v_head_dim, Shard.SPLIT, True),
    ]


def _norms(m: ModelFacts) -> list[Tensor]:
    return [Tensor("layer_norms", 2 * m.hidden_size, 1, Shard.REPLICATED, False)]


def _mlp(
    h: int, inter: int, prefix: str = "mlp", count: int = 1, shard: Shard = Shard.SPLIT
) -> list[Tensor]:
    return [
        Tensor(f"{prefix}.gate_up_proj", 2 * inter, h, shard, True, count),
        Tensor(f"{prefix}.down_proj", h, inter, shard, True, count),
    ]


def _moe(m: ModelFacts) -> list[Tensor]:
    assert m.moe is not None
    e, h = m.moe, m.hidden_size
    tensors = [
        Tensor("router.gate", e.routed_experts, h, Shard.REPLICATED, False),
        Tensor("router.bias", e.routed_experts, 1, Shard.REPLICATED, False),
        *_mlp(h, e.expert_intermediate_size, "experts", e.routed_experts, Shard.EXPERT),
    ]
    if e.shared_experts:
        tensors += _mlp(h, e.shared_experts * e.expert_intermediate_size, "shared_experts")
    return tensors


def inventory(m: ModelFacts) -> Inventory:
    """Every tensor of the model, grouped by placement."""
    h, v = m.hidden_size, m.vocab_size
    attention = _attention(m) + _norms(m)
    embed = (Tensor("embed_tokens", v, h, Shard.SPLIT, False),)
    head = [Tensor("final_norm", h, 1, Shard.REPLICATED, False)]
    if not m.tie_word_embeddings:
        head.append(Tensor("lm_head", v, h, Shard.SPLIT, False))
    moe_layer = tuple(attention + _moe(m)) if m.moe else ()
    mtp_extra = (
        Tensor("mtp.enorm_hnorm", 2 * h, 1, Shard.REPLICATED, False),
        Tensor("mtp.eh_proj", h, 2 * h, Shard.REPLICATED, False),
        Tensor("mtp.shared_head_norm", h, 1, Shard.REPLICATED, False),
    )
    return Inventory(
        embed=embed,
        head=tuple(head),
        dense_layer=tuple(attention + _mlp(h, m.intermediate_size)),
        moe_layer=moe_layer,
        dense_layers=m.dense_layer_count,
        moe_layers=m.moe_layer_count,
        mtp_extra=mtp_extra if m.mtp_layers else (),
        mtp_layers=m.mtp_layers,
    )


def _sum(tensors: tuple[Tensor, ...] | list[Tensor]) -> int:
    return sum(t.params for t in tensors)


def _sum_where(tensors: tuple[Tensor, ...], words: tuple[str, ...]) -> int:
    return sum(t.params for t in tensors if any(w in t.name for w in words))


def count_params(m: ModelFacts) -> ParamCount:
    """Parameter counts from the architecture; MTP apart (vLLM serves without it by default)."""
    inv = inventory(m)
    layers = [(inv.dense_layer, inv.dense_layers), (inv.moe_layer, inv.moe_layers)]
    norm_words = ("norm",)
    mlp_words = ("mlp", "experts", "router")
    attention = sum(
        (_sum(t) - _sum_where(t, norm_words) - _sum_where(t, mlp_words)) * n for t, n in layers
    )
    mlp = sum(_sum_where(t, mlp_words) * n for t, n in layers)
    norms = sum(_sum_where(t, norm_words) * n for t, n in layers) + m.hidden_size
    embedding = _sum(inv.embed)
    lm_head = 0 if m.tie_word_embeddings else m.vocab_size * m.hidden_size
    total = embedding + attention + mlp + norms + lm_head
    unused_experts = 0
    if m.moe is not None:
        per_expert = 3 * m.hidden_size * m.moe.expert_intermediate_size
        unused_experts = (
            (m.moe.routed_experts - m.moe.experts_per_token) * per_expert * inv.moe_layers
        )
    mtp = (_sum(inv.mtp_extra) + _sum(inv.moe_layer or inv.dense_layer)) * inv.mtp_layers
    return ParamCount(
        embedding=embedding,
        attention=attention,
        mlp=mlp,
        norms=norms,
        lm_head=lm_head,
        total=total,
        active=total - unused_experts - (0 if m.tie_word_embeddings else embedding),
        mtp=mtp,
    )
