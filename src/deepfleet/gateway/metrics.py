"""Gateway metrics (prefix `deepfleet_`), kept off the per-chunk path: one observation at the
first chunk and a few at the end of each request.

The hot path uses labelled children looked up once (`of`, `in_flight_of`, `finished`):
`labels()` validates and locks on every call (~1.5 us), and a request made about ten.

With several gateway workers, prometheus-client's multiprocess mode merges every worker's
values into one /metrics: the library itself reads PROMETHEUS_MULTIPROC_DIR (set by the server
before the workers start), and `GatewayMetrics` is told the same folder (`multiprocess_dir`).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class ModelMetrics:
    """One model's labelled children."""

    __slots__ = (
        "answer_tokens",
        "e2e",
        "itl",
        "migration_gap",
        "output_tokens",
        "prompt_tokens",
        "reasoning_capped",
        "reasoning_tokens",
        "ttft",
    )

    def __init__(self, m: GatewayMetrics, model: str) -> None:
        self.ttft = m.ttft.labels(model)
        self.itl = m.itl.labels(model)
        self.e2e = m.e2e.labels(model)
        self.prompt_tokens = m.prompt_tokens.labels(model)
        self.output_tokens = m.output_tokens.labels(model)
        self.reasoning_tokens = m.reasoning_tokens.labels(model)
        self.answer_tokens = m.answer_tokens.labels(model)
        self.reasoning_capped = m.reasoning_capped.labels(model)
        self.migration_gap = m.migration_gap.labels(model)


class GatewayMetrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, multiprocess_dir: Path | None = None
    ) -> None:
        self._models: dict[str, ModelMetrics] = {}
        self._in_flight: dict[str, Gauge] = {}
        self._finished: dict[tuple[str, str, str], Counter] = {}
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "deepfleet_requests",
            "Requests finished, by model, HTTP status and API key name",
            ["model", "status", "key"],
            registry=r,
        )
        self.ttft = Histogram(
            "deepfleet_time_to_first_token_seconds",
            "Gateway receive to first byte relayed",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "deepfleet_inter_token_latency_seconds",
            "Mean gap between streamed events, one sample per request",
            ["model"],
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "deepfleet_request_duration_seconds",
            "Gateway receive to last byte relayed",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "deepfleet_prompt_tokens", "Prompt tokens (engine usage)", ["model"], registry=r
        )
        self.output_tokens = Counter(
            "deepfleet_output_tokens",
            "Output tokens (engine usage, else one per streamed delta)",
            ["model"],
            registry=r,
        )
        self.reasoning_tokens = Histogram(
            "deepfleet_reasoning_tokens",
            "Thinking tokens per request",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.answer_tokens = Histogram(
            "deepfleet_answer_tokens",
            "Answer tokens per request",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.reasoning_capped = Counter(
            "deepfleet_reasoning_capped",
            "Streams ended by the reasoning cap",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "deepfleet_upstream_retries",
            "Requests retried on another replica before the first byte",
            ["model"],
            registry=r,
        )
        self.migrations = Counter(
            "deepfleet_migrations",
            "Streams and answers continued on another replica after their engine failed",
            ["model", "reason"],
            registry=r,
        )
        self.migration_gap = Histogram(
            "deepfleet_migration_gap_seconds",
            "Added latency of a migration: last bytes from the failed engine to the first"
            " from the next",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.waiting_for_replica = Gauge(
            "deepfleet_waiting_for_replica",
            "Requests waiting for a replica of their model to become ready (a model at zero"
            " replicas: the autoscaler starts one when it sees them)",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.replica_wait = Histogram(
            "deepfleet_replica_wait_seconds",
            "How long requests that got a replica waited for one to become ready",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ejections = Counter(
            "deepfleet_replica_ejections",
            "Replicas ejected after a failure before the first byte",
            ["replica"],
            registry=r,
        )
        self.rejected = Counter(
            "deepfleet_rejected",
            "Requests refused before routing, by reason",
            ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "deepfleet_admission_queue_depth",
            "Requests waiting for an upstream slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.in_flight = Gauge(
            "deepfleet_in_flight_requests",
            "Requests in flight per replica",
            ["replica"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ready_replicas = Gauge(
            "deepfleet_ready_replicas",
            "Ready replicas per model",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )

    def of(self, model: str) -> ModelMetrics:
        mm = self._models.get(model)
        if mm is None:
            mm = self._models[model] = ModelMetrics(self, model)
        return mm

    def in_flight_of(self, replica: str) -> Gauge:
        g = self._in_flight.get(replica)
        if g is None:
            g = self._in_flight[replica] = self.in_flight.labels(replica)
        return g

    def finished(self, model: str, status: str, key: str) -> Counter:
        """The requests counter of one (model, status, key name)."""
        labels = (model, status, key)
        c = self._finished.get(labels)
        if c is None:
            c = self._finished[labels] = self.requests.labels(*labels)
        return c

    def exposition(self) -> bytes:
        if self.multiprocess_dir is not None:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)
