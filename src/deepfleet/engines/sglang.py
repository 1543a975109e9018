"""SGLang on NVIDIA GPUs: `python -m sglang.launch_server` with SGLang's own flag names.

The planner's hints use vLLM's names; this adapter translates the ones it knows:
`max_num_batched_tokens` -> `chunked_prefill_size`; `data_parallel_size` (data-parallel
attention ranks, each with its own devices in vLLM) -> `dp_size` with `enable_dp_attention` and a
TP group of tp x dp devices (SGLang splits attention inside the TP group);
`enable_expert_parallel` -> `ep_size` over that group. `distributed_executor_backend` is
dropped: SGLang has no Ray executor, so a replica stays on one node. A model's `engine_args`
are SGLang's own flags, passed as is; `false` leaves a switch off (SGLang's switches have no
`--no-` form).

Not wired yet: KV events (the gateway's index is fed by vLLM's events) and KV offloading
(SGLang's hierarchical cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.base import (
    VISIBLE_DEVICES_ENV,
    KvOffload,
    LaunchSpec,
    MultiNode,
    ReplicaPlan,
    Vendor,
    engine_flags,
    override_flags,
)
from deepfleet.engines.load import LoadMetrics
from deepfleet.engines.vllm import is_r1_family

SERVER_MODULE = "sglang.launch_server"
SGLANG_METRICS = LoadMetrics(
    running="sglang:num_running_reqs",
    waiting="sglang:num_queue_reqs",
    kv_usage="sglang:token_usage",
    prefix_queries="sglang:prompt_tokens_total",
    prefix_hits="sglang:cached_tokens_total",
)
_VLLM_HINTS = frozenset(
    {"max_num_batched_tokens", "data_parallel_size", "enable_expert_parallel",
     "distributed_executor_backend"}
)  # fmt: skip


def _hints(plan: ReplicaPlan) -> dict[str, Any]:
    """The plan's engine defaults in SGLang's names (see the module docstring)."""
    hints = plan.engine_defaults
    out = {k: v for k, v in hints.items() if k not in _VLLM_HINTS}
    if "max_num_batched_tokens" in hints:
        out["chunked_prefill_size"] = hints["max_num_batched_tokens"]
    dp = int(hints.get("data_parallel_size", 1))
    if dp > 1:
        out |= {"tp_size": plan.tp * dp, "dp_size": dp, "enable_dp_attention": True}
    if hints.get("enable_expert_parallel"):
        out["ep_size"] = plan.tp * dp
    return out


@dataclass(frozen=True)
class SglangAdapter:
    name: str = "sglang"
    health_path: str = "/health"
    vendor: Vendor = "nvidia"
    visible_devices_env: str | None = VISIBLE_DEVICES_ENV["nvidia"]
    python_module: str | None = "sglang"
    default_block_size: int = 1  # SGLang's radix cache matches single tokens (page_size 1)
    multi_node: MultiNode | None = None
    load_metrics: LoadMetrics = SGLANG_METRICS

    def block_size(self, engine_args: dict[str, Any]) -> int:
        return int(engine_args.get("page_size") or self.default_block_size)

    def kv_offload(self, spec: KvCacheSpec, remote_url: str | None = None) -> KvOffload | None:
        return None

    def launch_spec(self, plan: ReplicaPlan) -> LaunchSpec:
        m = plan.model
        argv = [
            plan.python, "-m", SERVER_MODULE,
            "--model-path", plan.model_path,
            "--served-model-name", m.name,
            "--host", plan.host,
            "--port", str(plan.port),
            "--enable-metrics",
        ]  # fmt: skip
        if plan.max_model_len:
            argv += ["--context-length", str(plan.max_model_len)]
        if plan.max_num_seqs:
            argv += ["--max-running-requests", str(plan.max_num_seqs)]
        if plan.tp > 1:
            argv += ["--tp-size", str(plan.tp)]
        if plan.pp > 1:
            argv += ["--pp-size", str(plan.pp)]
        if plan.gpu_memory_utilization:
            argv += ["--mem-fraction-static", f"{plan.gpu_memory_utilization:.3f}"]
        if m.kv_cache_dtype:
            argv += ["--kv-cache-dtype", m.kv_cache_dtype]
        if m.trust_remote_code:
            argv.append("--trust-remote-code")
        if is_r1_family(m.source, m.name):
            argv += ["--reasoning-parser", "deepseek-r1"]
        args = {**_hints(plan), **m.engine_args}
        off = {"--no-" + k.replace("_", "-") for k, v in args.items() if v is False}
        argv = [a for a in override_flags(argv, engine_flags(args)) if a not in off]
        if plan.api_key:  # SGLang reads it from no environment variable
            argv += ["--api-key", plan.api_key]
        return LaunchSpec(argv=argv, env={**plan.env_defaults, **m.engine_env})
