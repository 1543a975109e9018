"""Benchmark output: JSON, a markdown table for one or more runs, and a comparison table with
ratios against the first target."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from deepfleet.bench.benchmark import BenchReport
from deepfleet.bench.stats import Distribution


def to_dict(report: BenchReport, *, with_requests: bool = False) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    results = data.pop("results")
    if with_requests:
        data["requests"] = results
    return data


def _ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _dist(d: Distribution) -> str:
    return f"{_ms(d.p50)} / {_ms(d.p90)} / {_ms(d.p99)}"


def markdown(reports: Sequence[BenchReport]) -> str:
    """One row per run: throughput, latency percentiles (p50 / p90 / p99 ms), hit rate."""
    header = (
        "| target | load | ok/failed | req/s | out tok/s | total tok/s | goodput req/s "
        "| TTFT ms p50/p90/p99 | TPOT ms p50/p90/p99 | ITL ms p50/p90/p99 "
        "| E2E ms p50/p90/p99 | prefix hit |"
    )
    lines = [header, "|" + "---|" * 12]
    for r in reports:
        s = r.summary
        goodput = "-" if s.goodput is None else f"{s.goodput:.2f}"
        lines.append(
            f"| {r.target} | {r.load} | {s.completed}/{s.failed} | {s.request_throughput:.2f} "
            f"| {s.output_throughput:.1f} | {s.total_token_throughput:.1f} | {goodput} "
            f"| {_dist(s.ttft)} | {_dist(s.tpot)} | {_dist(s.itl)} | {_dist(s.e2e)} "
            f"| {_rate(r.prefix_cache_hit_rate)} |"
        )
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True, slots=True)
class Ratio:
    """One target against the baseline (the first target)."""

    target: str
    throughput_ratio: float
    added_ttft_p50_ms: float
    added_ttft_p99_ms: float
    added_itl_p50_ms: float
    added_e2e_p50_ms: float


def ratios(reports: Sequence[BenchReport]) -> list[Ratio]:
    base = reports[0].summary
    out = []
    for r in reports:
        s = r.summary
        out.append(
            Ratio(
                target=r.target,
                throughput_ratio=(
                    s.output_throughput / base.output_throughput if base.output_throughput else 0.0
                ),
                added_ttft_p50_ms=(s.ttft.p50 - base.ttft.p50) * 1000,
                added_ttft_p99_ms=(s.ttft.p99 - base.ttft.p99) * 1000,
                added_itl_p50_ms=(s.itl.p50 - base.itl.p50) * 1000,
                added_e2e_p50_ms=(s.e2e.p50 - base.e2e.p50) * 1000,
            )
        )
    return out


def compare_markdown(reports: Sequence[BenchReport]) -> str:
    """Side by side, with ratios and added latency against the first target."""
    lines = [
        "| target | ok/failed | out tok/s | x first | TTFT p50 ms | +p50 | TTFT p99 ms | +p99 "
        "| ITL p50 ms | +ITL p50 | E2E p50 ms | prefix hit |",
        "|" + "---|" * 12,
    ]
    for r, q in zip(reports, ratios(reports), strict=True):
        s = r.summary
        lines.append(
            f"| {r.target} | {s.completed}/{s.failed} | {s.output_throughput:.1f} "
            f"| {q.throughput_ratio:.3f} | {_ms(s.ttft.p50)} | {q.added_ttft_p50_ms:+.1f} "
            f"| {_ms(s.ttft.p99)} | {q.added_ttft_p99_ms:+.1f} | {_ms(s.itl.p50)} "
            f"| {q.added_itl_p50_ms:+.2f} | {_ms(s.e2e.p50)} | {_rate(r.prefix_cache_hit_rate)} |"
        )
    return "\n".join(lines)


def compare_dict(reports: Sequence[BenchReport]) -> dict[str, Any]:
    return {
        "baseline": reports[0].target,
        "targets": [to_dict(r) for r in reports],
        "ratios": [dataclasses.asdict(q) for q in ratios(reports)],
    }
