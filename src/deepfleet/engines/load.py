"""An engine's load, read from its Prometheus /metrics text.

Each adapter names its metrics (`EngineAdapter.load_metrics`); `parse_load` sums each over its
label sets (data-parallel engines report one series per rank).
"""

from __future__ import annotations

from dataclasses import dataclass

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"  # 0..1
QUERIES = "vllm:prefix_cache_queries_total"  # tokens looked up in the prefix cache
HITS = "vllm:prefix_cache_hits_total"  # tokens found


@dataclass(frozen=True, slots=True)
class LoadMetrics:
    """The metric names an engine reports its load under."""

    running: str
    waiting: str
    kv_usage: str  # fraction of the KV cache in use, 0..1
    prefix_queries: str  # counter: prompt tokens looked up in the prefix cache
    prefix_hits: str  # counter: of those, tokens found


VLLM_METRICS = LoadMetrics(RUNNING, WAITING, KV_USAGE, QUERIES, HITS)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_queries: float = 0.0  # tokens looked up in the prefix cache since engine start
    prefix_hits: float = 0.0  # tokens found
    at: float = 0.0


def parse_load(
    text: str, at: float = 0.0, metrics: LoadMetrics = VLLM_METRICS
) -> EngineLoad | None:
    """Sum each of `metrics` over its label sets; None when the text has none of them."""
    wanted = (metrics.running, metrics.waiting, metrics.kv_usage, metrics.prefix_queries,
              metrics.prefix_hits)  # fmt: skip
    sums = dict.fromkeys(wanted, 0.0)
    seen = False
    for line in text.splitlines():
        if not line.startswith(wanted):  # most lines: one C-level check
            continue
        name, _, rest = line.partition("{")
        if not rest:
            name, _, value = line.partition(" ")
        else:
            value = rest.rpartition("}")[2]
        if name in sums:
            try:
                sums[name] += float(value.split()[0])
            except (ValueError, IndexError):
                continue
            seen = True
    if not seen:
        return None
    return EngineLoad(
        running=int(sums[metrics.running]),
        waiting=int(sums[metrics.waiting]),
        kv_usage=sums[metrics.kv_usage],
        prefix_queries=sums[metrics.prefix_queries],
        prefix_hits=sums[metrics.prefix_hits],
        at=at,
    )
