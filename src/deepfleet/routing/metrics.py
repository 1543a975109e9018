"""The load balancer's Prometheus metrics (decisions, the KV index it reads, engines' prefix
cache hit rates), registered beside the gateway's (prefix `deepfleet_`). With several gateway
workers (prometheus-client multiprocess mode), gauges that every worker measures alike report
the max over live workers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
PREPARE_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)


class RoutingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "deepfleet_routing_decisions",
            "Routing decisions by policy and reason (prefix, load, spill, single, order)",
            ["model", "policy", "reason"],
            registry=r,
        )
        self.routed_blocks = Counter(
            "deepfleet_routing_prompt_blocks",
            "Full KV blocks of routed prompts",
            ["model"],
            registry=r,
        )
        self.matched_blocks = Counter(
            "deepfleet_routing_matched_blocks",
            "Of those, blocks the chosen replica held by the index (predicted prefix hits)",
            ["model"],
            registry=r,
        )
        self.prepare = Histogram(
            "deepfleet_routing_prepare_seconds",
            "Chat template + tokenization + block hashes per request",
            ["model"],
            buckets=PREPARE_BUCKETS,
            registry=r,
        )
        self.index_blocks = Gauge(
            "deepfleet_kv_index_blocks",
            "Distinct KV blocks in the index",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.index_entries = Gauge(
            "deepfleet_kv_index_entries",
            "(replica, block) entries in the index",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.event_lag = Histogram(
            "deepfleet_kv_event_lag_seconds",
            "Engine batch timestamp to applied in the index",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.resyncs = Counter(
            "deepfleet_kv_event_resyncs",
            "Gaps in a replica's KV event sequence, by how they were closed",
            ["replica", "how"],
            registry=r,
        )
        self.invalid_events = Counter(
            "deepfleet_kv_events_invalid",
            "KV event batches or events dropped because they failed validation",
            ["replica"],
            registry=r,
        )
        self.hit_rate = Gauge(
            "deepfleet_prefix_cache_hit_rate",
            "Engine prefix-cache hits / queries (tokens) since the engine started",
            ["model", "replica"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.fleet_hit_rate = Gauge(
            "deepfleet_fleet_prefix_cache_hit_rate",
            "Prefix-cache hits / queries (tokens) over a model's replicas",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
