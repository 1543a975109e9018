"""Engine load as each replica's Prometheus /metrics reports it (vLLM's names)."""

from __future__ import annotations

from dataclasses import dataclass

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"
_WANTED = (RUNNING, WAITING, KV_USAGE, QUERIES, HITS)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    prefix_queries: float = 0.0  # tokens looked up in the prefix cache since engine start
    prefix_hits: float = 0.0  # tokens found
    at: float = 0.0


def parse_load(text: str, at: float = 0.0) -> EngineLoad | None:
    """Sum each wanted metric over its label sets (data-parallel engines have several); None
    when the text has none of them."""
    sums = dict.fromkeys(_WANTED, 0.0)
    seen = False
    for line in text.splitlines():
        if not line.startswith("vllm:"):
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
        running=int(sums[RUNNING]),
        waiting=int(sums[WAITING]),
        kv_usage=sums[KV_USAGE],
        prefix_queries=sums[QUERIES],
        prefix_hits=sums[HITS],
        at=at,
    )
