"""Memory per device: weight shard + KV + activations + runtime reserve, under a utilization.

vLLM sizes its KV cache as what is left of `gpu_memory_utilization x total memory` after the
weights, the peak activation of a profile forward pass of `max_num_batched_tokens` tokens,
non-torch memory (CUDA context, NCCL) and the CUDA graph pool (vllm/v1/worker/gpu_worker.py,
determine_available_memory). Each worker does so for its own stage, and the engine keeps the
smallest block count, so the replica's KV tokens are set by its tightest stage.

Checked against vLLM 0.26 on an H200 (total 139.80 GiB, utilization 0.92, shared/gpu/README.md):
for a 7.0B Qwen2-architecture model the terms below give 113.6 GiB of KV where vLLM found
114.36 GiB (-0.7%); for the 8-layer DeepSeek-V3 cut they give 53.6 GiB where vLLM found
57.9 GiB (-7%, on the safe side: the MoE constants were fit to the measured peaks).
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.catalog.hardware import Device, GiB
from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import WeightFormat
from deepfleet.planner.kv import kv_bytes_per_token_layer, kv_heads_per_rank, stage_layers
from deepfleet.planner.params import Inventory, Shard, Tensor, inventory

# Activation: bf16 elements alive per batched token at the peak of a forward pass (see
# activation_bytes). The fused-MoE path allocates several times its nominal buffers (fp8
# activation copies, padded expert blocks, workspaces kept alive); this factor makes the
# nominal MoE term match the 9.47 GiB vLLM 0.26 measured for 8,192 tokens of DeepSeek-V3.
MOE_WORKSPACE_FACTOR = 5.3
# Sampler profile: logits of max_num_seqs rows in fp32, with the copies top-k/top-p sorting makes.
SAMPLER_COPIES = 4
# Reserve: non-torch memory (CUDA context, allocator), plus NCCL/custom all-reduce buffers when
# the replica spans devices; CUDA graph pool as measured (0.89 GiB dense 7B; 8.45 GiB with 256
# local experts, assumed to scale with the experts held on the device).
NON_TORCH_BYTES = int(0.25 * GiB)
COLLECTIVES_BYTES = int(0.5 * GiB)
DENSE_GRAPH_BYTES = int(0.9 * GiB)
MOE_GRAPH_BYTES_PER_EXPERT = int(7.55 * GiB / 256)
# vLLM's CPU build: API server, engine core and worker processes besides weights and KV
# (about 0.8 + 0.7 + 1.5 GB RSS for the 135M model, FACTS.md).
CPU_RUNTIME_BYTES = int(3.0 * GiB)


@dataclass(frozen=True)
class Parallelism:
    """How one replica is split: TP ranks per stage, PP stages, data-parallel attention ranks
    (attention replicated per rank, each rank its own requests; MoE experts divided over
    tp x attn_dp), and whether MoE layers use expert parallelism (whole experts per rank)."""

    tp: int = 1
    pp: int = 1
    attn_dp: int = 1
    ep: bool = False

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.attn_dp


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes on the tightest device of a replica; `kv` is what is left for the KV cache."""

    capacity: int
    budget: int
    weights: int
    activation: int
    reserve: int
    kv_bytes_per_token: int
    stage: int

    @property
    def kv(self) -> int:
        return self.budget - self.weights - self.activation - self.reserve


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def device_bytes(t: Tensor, fmt: WeightFormat, m: ModelFacts, par: Parallelism) -> float:
    """Bytes of tensor `t` held by one device of a stage (the average device for experts)."""
    full = fmt.tensor_bytes(t)
    if t.shard is Shard.REPLICATED:
        return full
    if t.shard is Shard.KV_HEADS:
        return full * kv_heads_per_rank(m, par.tp) / m.num_kv_heads
    if t.shard is Shard.EXPERT:
        group = par.tp * par.attn_dp
        if par.ep and m.moe is not None:
            return full * _cdiv(m.moe.routed_experts, group) / m.moe.routed_experts
        return full / group
    return full / par.tp


def is_moe_layer(m: ModelFacts, i: int) -> bool:
    """Whether decoder layer `i` (0-based) has a mixture-of-experts MLP."""
    return m.moe is not None and i >= m.moe.first_dense_layers and i % m.moe.layer_freq == 0


def stage_layer_counts(m: ModelFacts, pp: int, stage: int) -> tuple[int, int]:
    """(dense, MoE) decoder layers on PP stage `stage`."""
    parts = stage_layers(m.num_layers, pp)
    start = sum(parts[:stage])
    moe = sum(1 for i in range(start, start + parts[stage]) if is_moe_layer(m, i))
    return parts[stage] - moe, moe


def _sum_bytes(
    tensors: tuple[Tensor, ...], fmt: WeightFormat, m: ModelFacts, par: Parallelism
) -> float:
    return sum(device_bytes(t, fmt, m, par) for t in tensors)


def stage_weight_bytes(
    m: ModelFacts, inv: Inventory, fmt: WeightFormat, par: Parallelism, stage: int, mtp: bool
) -> int:
    """Weight bytes on one device of PP stage `stage` (embeddings on the first stage, final
    norm and lm_head on the last; a tied head is a second copy when pp > 1; MTP on the last)."""
    dense, moe = stage_layer_counts(m, par.pp, stage)
    total = dense * _sum_bytes(inv.dense_layer, fmt, m, par)
    total += moe * _sum_bytes(inv.moe_layer, fmt, m, par)
    if stage == 0:
        total += _sum_bytes(inv.embed, fmt, m, par)
    if stage == par.pp - 1:
        total += _sum_bytes(inv.head, fmt, m, par)
        if m.tie_word_embeddings and par.pp > 1:
            total += _sum_bytes(inv.embed, fmt, m, par)
        if mtp:
            mtp_layer = inv.mtp_extra + (inv.moe_layer or inv.dense_layer)
            total += inv.mtp_layers * _sum_bytes(mtp_layer, fmt, m, par)
    return int(total)


def activation_bytes(
    m: ModelFacts, par: Parallelism, batched_tokens: int, max_num_seqs: int, element_bytes: int = 2
) -> int:
    """Peak activation of the profile pass on one device.

    Forward, per batched token, in elements of `element_bytes` (2: bf16, 4: float32): the
    residual stream and its normed copies (4 x hidden) plus the larger of the attention
    tensors (q, k, v and output of this rank's heads; MLA rebuilds full-width K and V for
    prefill) and the MLP tensors (gate+up and activation: 3 x intermediate / TP; MoE: top-k x
    (3 x expert_intermediate / TP + hidden), times MOE_WORKSPACE_FACTOR). Sampler:
    max_num_seqs rows of vocab/TP fp32 logits, SAMPLER_COPIES times. The two passes run one
    after the other, so the peak is the larger.
    """
    tp, h = par.tp, m.hidden_size
    heads = max(1, m.num_heads // tp)
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        attention = heads * (2 * qk + 2 * a.v_head_dim) + a.kv_lora_rank + a.qk_rope_head_dim
    else:
        kv = kv_heads_per_rank(m, tp) * m.head_dim
        attention = 2 * heads * m.head_dim + 2 * kv
    mlp = 3 * m.intermediate_size // tp if m.dense_layer_count else 0
    if m.moe is not None:
        e = m.moe
        shared = 3 * e.shared_experts * e.expert_intermediate_size // tp
        routed = e.experts_per_token * (3 * e.expert_intermediate_size // tp + h)
        mlp = max(mlp, int(routed * MOE_WORKSPACE_FACTOR) + shared)
    forward = batched_tokens * element_bytes * (4 * h + max(attention, mlp))
    sampler = max_num_seqs * (m.vocab_size // tp) * 4 * SAMPLER_COPIES
    return max(forward, sampler)


def reserve_bytes(m: ModelFacts, par: Parallelism, device: Device, enforce_eager: bool) -> int:
    """Memory the runtime holds besides weights, KV and activations."""
    if device.vendor == "cpu":
        return CPU_RUNTIME_BYTES
    reserve = NON_TORCH_BYTES + (COLLECTIVES_BYTES if par.devices > 1 else 0)
    if not enforce_eager:
        reserve += DENSE_GRAPH_BYTES
        if m.moe is not None:
            local_experts = _cdiv(m.moe.routed_experts, par.tp * par.attn_dp)
            reserve += MOE_GRAPH_BYTES_PER_EXPERT * local_experts
    return reserve


@dataclass(frozen=True)
class MemoryInputs:
    """Engine settings the memory model depends on."""

    utilization: float
    batched_tokens: int
    max_num_seqs: int
    kv_dtype_bytes: int = 2
    mtp: bool = False
    enforce_eager: bool = False
    activation_element_bytes: int = 2


def device_memory(
    m: ModelFacts, fmt: WeightFormat, device: Device, par: Parallelism, inputs: MemoryInputs
) -> DeviceMemory:
    """The memory of the device whose stage holds the fewest KV tokens."""
    inv = inventory(m)
    activation = activation_bytes(
        m, par, inputs.batched_tokens, inputs.max_num_seqs, inputs.activation_element_bytes
    )
    reserve = reserve_bytes(m, par, device, inputs.enforce_eager)
    budget = int(device.memory_bytes * inputs.utilization)
    per_layer = kv_bytes_per_token_layer(m, inputs.kv_dtype_bytes, par.tp)
    candidates = []
    for stage, layers in enumerate(stage_layers(m.num_layers, par.pp)):
        weights = stage_weight_bytes(m, inv, fmt, par, stage, inputs.mtp)
        mem = DeviceMemory(
            capacity=device.memory_bytes,
            budget=budget,
            weights=weights,
            activation=activation,
            reserve=reserve,
            kv_bytes_per_token=per_layer * layers,
            stage=stage,
        )
        candidates.append(mem)
    return min(candidates, key=lambda d: (d.kv // d.kv_bytes_per_token, -d.weights))
