"""A rate sweep: run the same workload at rising Poisson rates to find where the target saturates.

A rate is saturated when the achieved request throughput falls below SATURATED of the offered
rate (requests queue up instead of being served). `auto` starts at AUTO_START req/s and doubles
until saturation or AUTO_MAX_STEPS runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deepfleet.bench.benchmark import BenchReport
from deepfleet.bench.runner import LoadShape

SATURATED = 0.9
AUTO_START = 0.5
AUTO_MAX_STEPS = 8


def sweep_rates(text: str) -> list[float] | None:
    """'1,2,4' -> [1, 2, 4]; 'auto' -> None (doubling until saturation)."""
    if text.strip() == "auto":
        return None
    rates = [float(part) for part in text.split(",") if part.strip()]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"--sweep {text!r}: expected positive rates like 1,2,4 or 'auto'")
    return rates


def offered_rate(report: BenchReport) -> float | None:
    for part in report.load.split(","):
        if part.strip().startswith("rate "):
            return float(part.strip().removeprefix("rate ").removesuffix("/s"))
    return None


def is_saturated(report: BenchReport) -> bool:
    offered = offered_rate(report)
    if offered is None:
        return False
    s = report.summary
    return s.failed > 0 or s.request_throughput < SATURATED * offered


def saturation_rate(reports: Sequence[BenchReport]) -> float | None:
    """The highest offered rate that was still served, or None if the first was saturated."""
    best = None
    for report in reports:
        if is_saturated(report):
            break
        best = offered_rate(report)
    return best


def run_sweep(
    run_at: Callable[[LoadShape], BenchReport],
    rates: Sequence[float] | None,
    *,
    concurrency: int | None = None,
    seed: int = 0,
) -> list[BenchReport]:
    """Run at each rate (each step gets its own seed, so prompts differ between steps)."""
    reports: list[BenchReport] = []
    plan = list(rates) if rates is not None else [AUTO_START * 2**i for i in range(AUTO_MAX_STEPS)]
    for step, rate in enumerate(plan):
        report = run_at(LoadShape(concurrency=concurrency, rate=rate, seed=seed + step))
        reports.append(report)
        if rates is None and is_saturated(report):
            break
    return reports
