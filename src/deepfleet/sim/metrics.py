"""The engine's Prometheus metrics under vLLM's names, labels and buckets
(vllm/v1/metrics/loggers.py and buckets.py, vLLM 0.32), rendered in the text format.

Written by hand rather than with prometheus_client so that 64 engines in one process keep
separate, cheap metric sets.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
RUNNING_HELP = "Number of requests in model execution batches."
WAITING_HELP = "Number of requests waiting to be processed."
USAGE_HELP = "KV-cache usage. 1 means 100 percent usage."
QUERIES_HELP = "Prefix cache queries, in terms of number of queried tokens."
HITS_HELP = "Prefix cache hits, in terms of number of cached tokens."
PREEMPT_HELP = "Cumulative number of preemption from the engine."
PROMPT_HELP = "Number of prefill tokens processed."
GENERATION_HELP = "Number of generation tokens processed."
TTFT_HELP = "Histogram of time to first token in seconds."
ITL_HELP = "Histogram of inter-token latency in seconds."
TPOT_HELP = "Histogram of time_per_output_token_seconds per request."
E2E_HELP = "Histogram of e2e request latency in seconds."


@dataclass
class Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class EngineMetrics:
    model_name: str
    block_size: int
    num_blocks: int
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_queries: int = 0
    prefix_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    preemptions: int = 0
    success: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def render(self) -> str:
        labels = f'engine="0",model_name="{self.model_name}"'
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        def scalar(name: str, kind: str, help_text: str, value: float) -> None:
            family(name, kind, help_text)
            out.append(f"{name}{{{labels}}} {float(value)}")

        def histogram(name: str, help_text: str, h: Histogram) -> None:
            family(name, "histogram", help_text)
            cumulative = 0
            model = self.model_name
            for bound, count in zip(h.buckets, h.counts, strict=True):
                cumulative += count
                le = f'engine="0",le="{bound}",model_name="{model}"'
                out.append(f"{name}_bucket{{{le}}} {float(cumulative)}")
            inf = f'engine="0",le="+Inf",model_name="{model}"'
            out.append(f"{name}_bucket{{{inf}}} {float(h.count)}")
            out.append(f"{name}_count{{{labels}}} {float(h.count)}")
            out.append(f"{name}_sum{{{labels}}} {h.total}")

        for name, kind, help_text, value in (
            ("vllm:num_requests_running", "gauge", RUNNING_HELP, self.running),
            ("vllm:num_requests_waiting", "gauge", WAITING_HELP, self.waiting),
            ("vllm:kv_cache_usage_perc", "gauge", USAGE_HELP, self.kv_usage),
            ("vllm:prefix_cache_queries_total", "counter", QUERIES_HELP, self.prefix_queries),
            ("vllm:prefix_cache_hits_total", "counter", HITS_HELP, self.prefix_hits),
            ("vllm:num_preemptions_total", "counter", PREEMPT_HELP, self.preemptions),
            ("vllm:prompt_tokens_total", "counter", PROMPT_HELP, self.prompt_tokens),
            ("vllm:generation_tokens_total", "counter", GENERATION_HELP, self.generation_tokens),
        ):
            scalar(name, kind, help_text, value)
        family("vllm:request_success_total", "counter", "Count of successfully processed requests.")
        for reason, count in self.success.items():
            reason_labels = f'engine="0",finished_reason="{reason}",model_name="{self.model_name}"'
            out.append(f"vllm:request_success_total{{{reason_labels}}} {float(count)}")
        histogram("vllm:time_to_first_token_seconds", TTFT_HELP, self.ttft)
        histogram("vllm:inter_token_latency_seconds", ITL_HELP, self.itl)
        histogram("vllm:request_time_per_output_token_seconds", TPOT_HELP, self.tpot)
        histogram("vllm:e2e_request_latency_seconds", E2E_HELP, self.e2e)
        family("vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig")
        out.append(
            f'vllm:cache_config_info{{block_size="{self.block_size}",enable_prefix_caching="True",'
            f'engine="0",num_gpu_blocks="{self.num_blocks}",prefix_caching_hash_algo="sha256",'
            f'simulator="deepfleet"}} 1.0'
        )
        return "\n".join(out) + "\n"
