"""KV cache bytes per token, and how vLLM turns a byte budget into a token count.

Per token and device (`b` = bytes per element, `L` = layers on the device's PP stage):

- GQA / MHA: 2 (K and V) x L x kv_heads_per_rank x head_dim x b. TP splits the KV heads while
  kv_heads >= TP; beyond that each rank keeps one (replicated) head, so the per-rank size stops
  falling.
- MLA: (kv_lora_rank + qk_rope_head_dim) x L x b. Every TP rank holds the whole latent, so TP
  does *not* divide it; only data-parallel attention (each rank its own requests) multiplies
  the tokens a replica holds. DeepSeek-V3/R1: 576 x 61 x 2 = 70,272 bytes.

vLLM allocates whole blocks of `block_size` tokens: num_blocks = budget // (block_size x bytes
per token), and logs "KV cache size: N tokens" with N = int(num_blocks / ceil(max_model_len /
block_size) x max_model_len), which is num_blocks x block_size when block_size divides
max_model_len (vllm/v1/core/kv_cache_utils.py, get_kv_cache_capacity).

On vLLM's CPU build, VLLM_CPU_KVCACHE_SPACE=<GiB> becomes the KV budget exactly
(vllm/platforms/cpu.py: kv_cache_memory_bytes = GiB x 2**30), and the block size is 128
unless set, or 16 for MLA models on the reference CPU MLA kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.catalog.hardware import GiB
from deepfleet.catalog.models import ModelFacts

CPU_BLOCK_SIZE = 128
CPU_MLA_BLOCK_SIZE = 16
GPU_BLOCK_SIZE = 16


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def stage_layers(num_layers: int, pp: int) -> tuple[int, ...]:
    """Layers per PP stage as vLLM splits them (get_pp_indices): the remainder goes one each
    to the stages before the last, from the second-to-last backwards."""
    if pp > num_layers:
        raise ValueError(f"pipeline parallel {pp} exceeds the {num_layers} layers")
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return tuple(parts)


def kv_heads_per_rank(model: ModelFacts, tp: int) -> int:
    """KV heads each TP rank stores: split while kv_heads >= TP, one replicated head after."""
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_layer(model: ModelFacts, dtype_bytes: int, tp: int = 1) -> int:
    """KV bytes one token takes in one layer on one TP rank."""
    if model.mla is not None:
        return (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * dtype_bytes
    return 2 * kv_heads_per_rank(model, tp) * model.head_dim * dtype_bytes


def kv_bytes_per_token(model: ModelFacts, dtype_bytes: int, tp: int = 1, pp: int = 1) -> int:
    """KV bytes per token on the busiest device of a (tp, pp) replica (the stage with most
    layers). With tp = pp = 1 it is the whole model's KV per token."""
    layers = max(stage_layers(model.num_layers, pp))
    return kv_bytes_per_token_layer(model, dtype_bytes, tp) * layers


@dataclass(frozen=True)
class KvCapacity:
    """What a KV budget holds, counted as vLLM counts it."""

    num_blocks: int
    block_size: int
    tokens: int
    """num_blocks x block_size: tokens the cache holds."""
    logged_tokens: int
    """The "KV cache size: N tokens" figure vLLM logs for `max_model_len`."""
    max_concurrency: float
    """Sequences of `max_model_len` tokens that fit at once."""


def kv_capacity(
    budget_bytes: int, bytes_per_token: int, block_size: int, max_model_len: int
) -> KvCapacity:
    """Blocks, tokens and concurrency that `budget_bytes` of KV cache hold."""
    num_blocks = max(0, budget_bytes) // (block_size * bytes_per_token)
    blocks_per_seq = _cdiv(max_model_len, block_size)
    concurrency = num_blocks / blocks_per_seq
    return KvCapacity(
        num_blocks=num_blocks,
        block_size=block_size,
        tokens=num_blocks * block_size,
        logged_tokens=int(concurrency * max_model_len),
        max_concurrency=concurrency,
    )


def cpu_block_size(model: ModelFacts) -> int:
    """vLLM CPU's default block size for this model."""
    return CPU_MLA_BLOCK_SIZE if model.mla is not None else CPU_BLOCK_SIZE


def cpu_kv_capacity(
    model: ModelFacts,
    kv_space_gib: int,
    max_model_len: int,
    *,
    block_size: int | None = None,
    dtype_bytes: int = 2,
) -> KvCapacity:
    """KV capacity of vLLM's CPU build under VLLM_CPU_KVCACHE_SPACE=`kv_space_gib`.

    The env value is an integer number of GiB (vLLM parses it with int()).
    """
    return kv_capacity(
        kv_space_gib * GiB,
        kv_bytes_per_token(model, dtype_bytes),
        block_size or cpu_block_size(model),
        max_model_len,
    )
