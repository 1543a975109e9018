"""Benchmark statistics with vLLM's definitions (vllm/benchmarks/serve.py `calculate_metrics`).

- TTFT, E2E: per successful request.
- TPOT: (E2E - TTFT) / (output_tokens - 1), over requests with more than one output token.
- ITL: every gap between successive token chunks, pooled over all requests.
- Throughput: completed requests, output tokens, and prompt + output tokens per second of the
  run's wall time. Goodput: requests per second that met every given SLO (a one-token output
  counts as TPOT 0, as in vLLM).
Percentiles interpolate linearly between closest ranks, like numpy's default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deepfleet.bench.client import RequestResult

PERCENTILES = (50.0, 90.0, 99.0)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Distribution:
    """A latency distribution in seconds."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        mean = sum(values) / len(values) if values else 0.0
        p50, p90, p99 = (percentile(values, p) for p in PERCENTILES)
        return cls(mean=mean, p50=p50, p90=p90, p99=p99)


@dataclass(frozen=True, slots=True)
class Slo:
    """Service-level objectives for goodput, in milliseconds; None means not checked."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met_by(self, result: RequestResult) -> bool:
        checks = (
            (self.ttft_ms, result.ttft_s),
            (self.tpot_ms, result.tpot_s),
            (self.e2e_ms, result.e2e_s),
        )
        return result.ok and all(
            limit is None or value * 1000.0 <= limit for limit, value in checks
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """One run's numbers; latencies in seconds, throughputs per second."""

    requests: int
    completed: int
    failed: int
    duration_s: float
    prompt_tokens: int
    output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    goodput: float | None
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2e: Distribution
    errors: tuple[str, ...]


def summarize(
    results: Iterable[RequestResult], duration_s: float, slo: Slo | None = None
) -> Summary:
    """Aggregate results of one run that took duration_s of wall time."""
    all_results = list(results)
    ok = [r for r in all_results if r.ok]
    duration = max(duration_s, 1e-9)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    output_tokens = sum(r.output_tokens for r in ok)
    goodput = None if slo is None else sum(slo.met_by(r) for r in ok) / duration
    errors = tuple(dict.fromkeys(r.error for r in all_results if not r.ok))[:5]
    return Summary(
        requests=len(all_results),
        completed=len(ok),
        failed=len(all_results) - len(ok),
        duration_s=duration_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        request_throughput=len(ok) / duration,
        output_throughput=output_tokens / duration,
        total_token_throughput=(prompt_tokens + output_tokens) / duration,
        goodput=goodput,
        ttft=Distribution.of([r.ttft_s for r in ok]),
        tpot=Distribution.of([r.tpot_s for r in ok if r.output_tokens > 1]),
        itl=Distribution.of([gap for r in ok for gap in r.itl_s]),
        e2e=Distribution.of([r.e2e_s for r in ok]),
        errors=errors,
    )
