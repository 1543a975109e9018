"""Memory per device: weight shard + KV + activations + runtime reserve, under a utilization.

vLLM sizes its KV cache as what is left of `gpu_memory_utilization x total memory` after the
weights, the torch peak of a profile pass of `max_num_batched_tokens` tokens, the non-torch
memory that pass added (cuBLAS workspaces, kernels loaded) and, with the V1 model runner, its
estimate of the CUDA graph pool (vllm/v1/worker/gpu_worker.py, determine_available_memory:
`requested_memory - non_kv_cache_memory - cudagraph_memory_estimate_applied`). Each worker does
so for its own stage, and the engine keeps the smallest block count, so the replica's KV tokens
are set by its tightest stage.

Each term below names the vLLM code it models; docs/planner.md has the check against vLLM 0.26
on the lent H200 (dense Qwen2-arch 7B and an 8-layer DeepSeek-V3 cut).
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.catalog.hardware import Device, GiB
from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import WeightFormat
from deepfleet.planner.kv import (
    GPU_BLOCK_SIZE,
    kv_bytes_per_token_layer,
    kv_heads_per_rank,
    stage_layers,
)
from deepfleet.planner.params import Inventory, Shard, Tensor, inventory

# --- The profile pass (vllm/v1/worker/gpu_model_runner.py, profile_run: _dummy_run of
# max_num_batched_tokens tokens, then _dummy_sampler_run). Attention layers get no metadata in
# that pass and skip the attention kernel, so only the projections' outputs are alive there.
#
# Sampler: max_num_seqs rows of vocab/TP fp32 logits, with the copies top-k/top-p sorting makes.
SAMPLER_COPIES = 4
# MLA: with no metadata, MLAAttention.forward_impl (vllm/model_executor/layers/attention/
# mla_attention.py) allocates the worst case of the prefill's up-projection of cached context,
# `kv_b_proj(kv_c_normed)`: chunked_prefill_workspace_size x heads x (qk_nope + v) elements. The
# workspace is MLACommonMetadataBuilder.determine_chunked_prefill_workspace_size:
# max(min(max(8 x max_model_len, 4 x max_num_seqs x block_size), 64 Ki), max_num_seqs x
# block_size) tokens.
MLA_PREFILL_WORKSPACE_CAP = 64 * 1024
# MoE: the fused-MoE modular kernel takes its buffers from the worker's WorkspaceManager
# (vllm/v1/worker/workspace.py), which keeps them for the life of the worker, so they sit under
# every later layer of the pass. TritonExperts.workspace_shapes (fused_moe/experts/triton_moe.py):
# workspace13 = (M, top_k, max(N/2, K)), workspace2 = (M, top_k, max(N, K)), output (M, K) with
# N = 2 x expert_intermediate / TP and K = hidden; FusedMoEModularKernel._allocate_buffers puts
# workspace13 and the output in one buffer when the batch is one chunk
# (VLLM_FUSED_MOE_CHUNK_SIZE tokens or fewer).

# --- Non-torch memory the profile pass adds (MemorySnapshot's non_torch_increase): cuBLAS/
# cuBLASLt workspaces, kernel images and the like; vLLM 0.26 logged 0.22 GiB (Qwen2-arch 7B) and
# 0.23 GiB (DeepSeek-V3 cut) on the H200 ("... GiB for non-torch memory"). NCCL/custom all-reduce
# buffers are allocated before the initial snapshot but still come out of the utilization budget
# when the replica spans devices.
NON_TORCH_BYTES = int(0.23 * GiB)
COLLECTIVES_BYTES = int(0.5 * GiB)

# --- CUDA graphs. vLLM picks the V2 model runner for generative models that are not MoE
# (vllm/config/vllm.py, VllmConfig.use_v2_model_runner / _is_default_v2_model_runner_model:
# `is_default_v2_architecture or not model_config.is_moe`); its profile_cudagraph_memory returns 0
# (vllm/v1/worker/gpu/model_runner.py), so dense models' graphs come out of the 1 - utilization
# headroom, not out of the KV budget. The V1 runner (MoE models) captures a few graphs before the
# KV cache is sized (gpu_model_runner.py, profile_cudagraph_memory): first capture of each mode +
# (graphs - 1) x the second capture's cost, summed over PIECEWISE and FULL, and that estimate is
# subtracted. Graph count: the capture sizes 1, 2, 4, every 8 to 256, every 16 above, up to
# min(2 x max_num_seqs, 512, max_num_batched_tokens) (VllmConfig._set_cudagraph_sizes), once per
# mode. What one graph costs is not derived here: it is measured. vLLM 0.26 estimated 4.23 GiB for
# 102 graphs of the DeepSeek-V3 cut (3 dense + 5 MoE layers, 256 local experts); dense layers are
# charged what the Qwen2-arch 7B's 28 layers took in the V2 runner's capture (0.89 GiB, assuming
# the same 102 graphs), the rest goes to the MoE layers and is assumed to scale with the experts
# a device holds (as the old whole-pool figure did; not measured at other expert counts).
GRAPH_MAX_CAPTURE_SIZE = 512
GRAPH_BYTES_PER_DENSE_LAYER = 0.89 * GiB / (28 * 102)
GRAPH_BYTES_PER_MOE_LAYER_EXPERT = (4.23 * GiB - 3 * 102 * GRAPH_BYTES_PER_DENSE_LAYER) / (
    5 * 102 * 256
)
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


def mla_profile_bytes(
    m: ModelFacts,
    par: Parallelism,
    max_model_len: int,
    max_num_seqs: int,
    block_size: int = GPU_BLOCK_SIZE,
    element_bytes: int = 2,
) -> int:
    """The tensor MLA attention allocates in the profile pass for the worst-case up-projection
    of cached context (see MLA_PREFILL_WORKSPACE_CAP); 0 for other attention."""
    if m.mla is None:
        return 0
    workspace = min(
        max(8 * max_model_len, 4 * max_num_seqs * block_size), MLA_PREFILL_WORKSPACE_CAP
    )
    workspace = max(workspace, max_num_seqs * block_size)
    heads = max(1, m.num_heads // par.tp)
    return workspace * heads * (m.mla.qk_nope_head_dim + m.mla.v_head_dim) * element_bytes


def moe_workspace_bytes(
    m: ModelFacts, par: Parallelism, batched_tokens: int, element_bytes: int = 2
) -> int:
    """The fused-MoE buffers the WorkspaceManager keeps after the first MoE layer of the profile
    pass (see the MoE note above): max(workspace13, output) + workspace2."""
    if m.moe is None or m.moe_layer_count == 0:
        return 0
    e, h = m.moe, m.hidden_size
    n = 2 * e.expert_intermediate_size // par.tp
    rows = batched_tokens * e.experts_per_token
    workspace13 = max(rows * max(n // 2, h), batched_tokens * h)
    workspace2 = rows * max(n, h)
    return (workspace13 + workspace2) * element_bytes


def activation_bytes(
    m: ModelFacts,
    par: Parallelism,
    batched_tokens: int,
    max_num_seqs: int,
    element_bytes: int = 2,
    max_model_len: int | None = None,
    block_size: int = GPU_BLOCK_SIZE,
) -> int:
    """Torch peak of vLLM's profile pass on one device, above the weights.

    Forward, per batched token, in elements of `element_bytes` (2: bf16, 4: float32): the
    residual stream and its normed copies (4 x hidden) plus the larger of what attention leaves
    alive (this rank's q, k, v and output; with MLA, q, the output, and the q/kv latents, plus
    the worst-case context up-projection tensor, `mla_profile_bytes`) and the MLP's tensors
    (gate+up and activation: 3 x intermediate / TP; an MoE layer's shared experts, its fp8
    input copies and output). Sampler: max_num_seqs rows of vocab/TP fp32 logits,
    SAMPLER_COPIES times. The two passes run one after the other, so the peak is the larger,
    on top of the fused-MoE workspaces (`moe_workspace_bytes`), which stay allocated.
    `max_model_len` (for MLA's workspace) defaults to the model's max_position_embeddings.
    """
    tp, h = par.tp, m.hidden_size
    heads = max(1, m.num_heads // tp)
    mla_context_bytes = 0
    if m.mla is not None:
        a = m.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        latents = (a.q_lora_rank or 0) + a.kv_lora_rank + a.qk_rope_head_dim
        attention = heads * (qk + a.v_head_dim) + latents
        length = max_model_len or m.max_position_embeddings
        mla_context_bytes = mla_profile_bytes(
            m, par, length, max_num_seqs, block_size, element_bytes
        )
    else:
        kv = kv_heads_per_rank(m, tp) * m.head_dim
        attention = 2 * heads * m.head_dim + 2 * kv
    attention_peak = batched_tokens * element_bytes * (4 * h + attention) + mla_context_bytes
    mlp = 3 * m.intermediate_size // tp if m.dense_layer_count else 0
    if m.moe is not None:
        e = m.moe
        shared = 3 * e.shared_experts * e.expert_intermediate_size // tp
        # fp8 copies of the input and of the activation (one byte each), and the output.
        fp8_copies = (h + e.experts_per_token * e.expert_intermediate_size // tp) // 2
        mlp = max(mlp, shared + fp8_copies + h)
    mlp_peak = batched_tokens * element_bytes * (4 * h + mlp)
    sampler = max_num_seqs * (m.vocab_size // tp) * 4 * SAMPLER_COPIES
    workspace = moe_workspace_bytes(m, par, batched_tokens, element_bytes)
    return workspace + max(attention_peak, mlp_peak, sampler)


def uses_v1_model_runner(m: ModelFacts) -> bool:
    """Whether vLLM runs the model with its V1 runner (MoE) rather than V2 (see CUDA graphs)."""
    return m.moe is not None


def cudagraph_capture_sizes(max_num_seqs: int, batched_tokens: int) -> list[int]:
    """vLLM's default capture sizes (VllmConfig._set_cudagraph_sizes)."""
    top = min(2 * max_num_seqs, GRAPH_MAX_CAPTURE_SIZE, batched_tokens)
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)]
    return [s for s in sizes if s <= top]


def cudagraph_estimate_bytes(
    m: ModelFacts, par: Parallelism, stage: int, max_num_seqs: int, batched_tokens: int
) -> int:
    """What the V1 runner's profile_cudagraph_memory subtracts from the KV budget on one device
    of PP stage `stage`: graphs (PIECEWISE and FULL decode, one per capture size) x the cost of
    one graph of this stage's layers; 0 under the V2 runner."""
    if not uses_v1_model_runner(m):
        return 0
    sizes = cudagraph_capture_sizes(max_num_seqs, batched_tokens)
    graphs = len(sizes) + sum(1 for s in sizes if s <= max_num_seqs)
    dense, moe = stage_layer_counts(m, par.pp, stage)
    per_graph = dense * GRAPH_BYTES_PER_DENSE_LAYER
    if m.moe is not None:
        local_experts = _cdiv(m.moe.routed_experts, par.tp * par.attn_dp)
        per_graph += moe * local_experts * GRAPH_BYTES_PER_MOE_LAYER_EXPERT
    return int(graphs * per_graph)


def reserve_bytes(
    m: ModelFacts,
    par: Parallelism,
    device: Device,
    enforce_eager: bool,
    max_num_seqs: int = 1024,
    batched_tokens: int = 8192,
    stage: int = 0,
) -> int:
    """Memory the runtime takes from the budget besides weights, KV and activations: non-torch
    memory, collective buffers, and the CUDA graph estimate vLLM subtracts."""
    if device.vendor == "cpu":
        return CPU_RUNTIME_BYTES
    reserve = NON_TORCH_BYTES + (COLLECTIVES_BYTES if par.devices > 1 else 0)
    if not enforce_eager:
        reserve += cudagraph_estimate_bytes(m, par, stage, max_num_seqs, batched_tokens)
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
    max_model_len: int | None = None
    block_size: int = GPU_BLOCK_SIZE


def device_memory(
    m: ModelFacts, fmt: WeightFormat, device: Device, par: Parallelism, inputs: MemoryInputs
) -> DeviceMemory:
    """The memory of the device whose stage holds the fewest KV tokens."""
    inv = inventory(m)
    activation = activation_bytes(
        m,
        par,
        inputs.batched_tokens,
        inputs.max_num_seqs,
        inputs.activation_element_bytes,
        inputs.max_model_len,
        inputs.block_size,
    )
    budget = int(device.memory_bytes * inputs.utilization)
    per_layer = kv_bytes_per_token_layer(m, inputs.kv_dtype_bytes, par.tp)
    candidates = []
    for stage, layers in enumerate(stage_layers(m.num_layers, par.pp)):
        weights = stage_weight_bytes(m, inv, fmt, par, stage, inputs.mtp)
        reserve = reserve_bytes(
            m,
            par,
            device,
            inputs.enforce_eager,
            inputs.max_num_seqs,
            inputs.batched_tokens,
            stage,
        )
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
