"""Roofline decode estimate: how fast a replica can step when memory bandwidth is the limit.

One decode step of a micro-batch of `b` sequences on one device of a PP stage takes

    t = max(bytes read / bandwidth, FLOPs / peak FLOP/s) + TP collectives

- bytes read: every non-expert weight on the device, the routed experts touched this step
  (for E experts, top-k routing and B tokens, E x (1 - (1 - k/E)^B) distinct experts are hit
  on average, so each device reads that fraction of its expert bytes), and the KV cache of
  the b sequences at their average context.
- FLOPs: 2 per active weight per token, plus attention over the context.
- collectives: two all-reduces per layer (after attention and after the MLP), each a fixed
  latency plus 2 (TP-1)/TP x b x hidden x 2 bytes over the node's link; with DP attention the
  MoE all-to-alls move b x top-k x hidden x 3 bytes per layer, over the network (shared by
  the node's devices) when the group spans nodes.

PP keeps one micro-batch per stage in flight: B sequences split into pp micro-batches, each
token of every sequence needs all pp stages, so tokens/s = B / (pp x t(B/pp)) plus a network
hop per stage. Roofline numbers are upper bounds: vLLM 0.26 reached 60% of it for one stream
and 55% at 64 streams on the H200 (docs/planner.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from deepfleet.catalog.hardware import Device
from deepfleet.catalog.models import ModelFacts
from deepfleet.planner.formats import WeightFormat
from deepfleet.planner.kv import kv_bytes_per_token_layer, stage_layers
from deepfleet.planner.memory import Parallelism, device_bytes, stage_layer_counts
from deepfleet.planner.params import Shard, inventory

NETWORK_HOP_S = 20e-6


@dataclass(frozen=True)
class Network:
    """Where collectives run: inside a node over the device links, beyond it over the
    nodes' network (`bandwidth` per node, shared by its devices)."""

    devices_per_node: int = 8
    bandwidth: float = 25e9


def _collectives_s(
    m: ModelFacts,
    device: Device,
    par: Parallelism,
    batch: float,
    layers: int,
    moe_layers: int,
    net: Network,
) -> float:
    """TP: two all-reduces per layer inside the node. DP attention + EP: a dispatch (fp8) and
    a combine (bf16) all-to-all per MoE layer, over the network once the group leaves a node."""
    h, total = m.hidden_size, 0.0
    if par.tp > 1:
        per_reduce = 2 * (par.tp - 1) / par.tp * batch * h * 2 / device.link_bandwidth
        total += 2 * layers * (device.link_latency_s + per_reduce)
    ranks = par.tp * par.attn_dp
    if par.attn_dp > 1 and m.moe is not None:
        inside = ranks <= net.devices_per_node
        bandwidth = device.link_bandwidth if inside else net.bandwidth / net.devices_per_node
        latency = device.link_latency_s if inside else NETWORK_HOP_S
        moved = batch * m.moe.experts_per_token * h * 3 * (ranks - 1) / ranks
        total += moe_layers * (2 * latency + moved / bandwidth)
    return total


def experts_touched(experts: int, top_k: int, tokens: float) -> float:
    """Expected distinct experts hit when `tokens` tokens each pick `top_k` of `experts`."""
    if tokens <= 0:
        return 0.0
    miss: float = (1.0 - top_k / experts) ** tokens
    return experts * (1.0 - miss)


@dataclass(frozen=True)
class DecodeEstimate:
    """Decode speed of one replica at `batch` concurrent sequences."""

    batch: int
    step_s: float
    tokens_per_s: float
    bytes_per_step: int
    bound: str  # "memory" or "compute"


def _stage_time(
    m: ModelFacts,
    fmt: WeightFormat,
    device: Device,
    par: Parallelism,
    batch: float,
    context: int,
    kv_dtype_bytes: int,
    net: Network,
) -> tuple[float, float, str]:
    inv = inventory(m)
    parts = stage_layers(m.num_layers, par.pp)
    layers = max(parts)
    dense_layers, moe_layers = stage_layer_counts(m, par.pp, parts.index(layers))
    moe_tokens = batch * par.attn_dp
    weight_bytes = 0.0
    flops = 0.0
    for tensors, count in ((inv.dense_layer, dense_layers), (inv.moe_layer, moe_layers)):
        for t in tensors:
            size = device_bytes(t, fmt, m, par) * count
            params = t.params * size / max(fmt.tensor_bytes(t), 1)
            if t.shard is Shard.EXPERT and m.moe is not None:
                e = m.moe
                touched = experts_touched(e.routed_experts, e.experts_per_token, moe_tokens)
                weight_bytes += size * touched / e.routed_experts
                flops += 2 * moe_tokens * e.experts_per_token * params / e.routed_experts
            else:
                weight_bytes += size
                flops += 2 * batch * params
    head = sum(device_bytes(t, fmt, m, par) for t in inv.head)
    if m.tie_word_embeddings:
        head += sum(device_bytes(t, fmt, m, par) for t in inv.embed)
    weight_bytes += head / par.pp
    flops += 2 * batch * m.vocab_size * m.hidden_size / par.tp / par.pp
    kv_read = batch * context * kv_bytes_per_token_layer(m, kv_dtype_bytes, par.tp) * layers
    if m.mla is not None:  # absorbed MLA: scores over the 576-wide latent, values over 512
        per_head = 2 * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) + 2 * m.mla.kv_lora_rank
    else:
        per_head = 4 * m.head_dim
    flops += batch * context * max(1, m.num_heads // par.tp) * per_head * layers
    total_bytes = weight_bytes + kv_read
    memory_s = total_bytes / device.bandwidth
    compute_s = flops / device.bf16_flops
    comm_s = _collectives_s(m, device, par, batch, layers, moe_layers, net)
    bound = "memory" if memory_s >= compute_s else "compute"
    return max(memory_s, compute_s) + comm_s, total_bytes, bound


def decode_estimate(
    m: ModelFacts,
    fmt: WeightFormat,
    device: Device,
    par: Parallelism,
    batch: int,
    context: int,
    kv_dtype_bytes: int = 2,
    net: Network | None = None,
) -> DecodeEstimate:
    """Roofline tokens/s of one replica with `batch` sequences at `context` tokens each.

    `batch` counts the sequences of the whole replica (all DP-attention ranks together).
    """
    net = net or Network()
    batch = max(1, batch)
    micro = batch / (par.pp * par.attn_dp)
    step, total_bytes, bound = _stage_time(m, fmt, device, par, micro, context, kv_dtype_bytes, net)
    if par.pp > 1:
        step += NETWORK_HOP_S + micro * m.hidden_size * 2 / net.bandwidth
    round_s = par.pp * step
    return DecodeEstimate(
        batch=batch,
        step_s=round_s,
        tokens_per_s=batch / round_s,
        bytes_per_step=int(total_bytes),
        bound=bound,
    )
