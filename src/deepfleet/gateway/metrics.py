"""Gateway metrics (prefix `deepfleet_`), kept off the per-chunk path: one observation at the
first chunk and one at the end of each request."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "deepfleet_requests",
            "Requests finished, by model and status",
            ["model", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "deepfleet_time_to_first_byte_seconds",
            "Gateway receive to first upstream byte sent",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "deepfleet_request_duration_seconds",
            "Gateway receive to last byte sent",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "deepfleet_upstream_retries",
            "Requests retried on another replica before the first byte",
            ["model"],
            registry=r,
        )
        self.ejections = Counter(
            "deepfleet_replica_ejections",
            "Replicas skipped after a failed connection",
            ["replica"],
            registry=r,
        )
        self.in_flight = Gauge(
            "deepfleet_in_flight_requests",
            "Requests in flight per replica",
            ["replica"],
            registry=r,
        )
        self.ready_replicas = Gauge(
            "deepfleet_ready_replicas", "Ready replicas per model", ["model"], registry=r
        )
