"""Latency profiles with explicit numbers, so tests know every step's duration."""

from __future__ import annotations

from deepfleet.sim.profile import LatencyProfile


def fixed_profile(
    step_s: float,
    per_seq_s: float = 0.0,
    prefill_tokens_per_s: float = 1e5,
    host_per_seq_s: float = 0.0,
) -> LatencyProfile:
    """Explicit numbers: a constant step plus per-sequence and prefill costs."""
    return LatencyProfile(
        name="fixed",
        weight_step_s=lambda _b: 0.0,
        kv_bytes_per_token=0.0,
        bandwidth=1.0,
        prefill_flops_per_token=1.0,
        prefill_flops=prefill_tokens_per_s,
        efficiency=1.0,
        prefill_mfu=1.0,
        step_overhead_s=step_s,
        per_seq_s=per_seq_s,
        host_per_seq_s=host_per_seq_s,
    )
