"""PNG charts of benchmark runs (matplotlib, imported only here and only when plotting).

One run: cumulative distributions of TTFT, ITL and E2E, and output tokens/s over time.
Several runs (a sweep or a comparison): throughput and p50/p99 latencies per run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepfleet.bench.benchmark import BenchReport

TITLE_NOTE = "deepfleet bench (load-test tool)"


def plot_reports(reports: Sequence[BenchReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    if len(reports) == 1:
        _single(reports[0], axes)
        title = f"{reports[0].workload}, {reports[0].load}, {reports[0].url}"
    else:
        _several(reports, axes)
        title = f"{reports[0].workload}: {len(reports)} runs"
    fig.suptitle(f"{TITLE_NOTE}: {title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cdf(ax: Any, values: Sequence[float], label: str) -> None:
    ordered = sorted(v * 1000 for v in values)
    if ordered:
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.plot(ordered, ys, drawstyle="steps-post")
    ax.set_xlabel(f"{label} (ms)")
    ax.set_ylabel("fraction of samples")
    ax.set_title(f"{label} CDF")
    ax.grid(alpha=0.3)


def _token_times(first: float, gaps: Sequence[float]) -> list[float]:
    times = [first]
    for gap in gaps:
        times.append(times[-1] + gap)
    return times


def _single(report: BenchReport, axes: Any) -> None:
    ok = [r for r in report.results if r.ok]
    _cdf(axes[0][0], [r.ttft_s for r in ok], "TTFT")
    _cdf(axes[0][1], [g for r in ok for g in r.itl_s], "ITL")
    _cdf(axes[1][0], [r.e2e_s for r in ok], "E2E")
    ax = axes[1][1]
    stamps = [t for r in ok for t in _token_times(r.started_at + r.ttft_s, r.itl_s)]
    if stamps:
        start, bins = min(r.started_at for r in ok), 40
        width = max((max(stamps) - start) / bins, 1e-6)
        counts = [0] * bins
        for t in stamps:
            counts[min(int((t - start) / width), bins - 1)] += 1
        ax.bar([i * width for i in range(bins)], [c / width for c in counts], width=width)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("token chunks/s")
    ax.set_title("throughput over time")
    ax.grid(alpha=0.3)


def _several(reports: Sequence[BenchReport], axes: Any) -> None:
    labels = [f"{r.target}\n{r.load}" if len(reports) < 5 else r.load for r in reports]
    xs = list(range(len(reports)))
    ax = axes[0][0]
    ax.bar(xs, [r.summary.output_throughput for r in reports])
    ax.set_title("output throughput (tokens/s)")
    panels = ((axes[0][1], "ttft", "TTFT"), (axes[1][0], "itl", "ITL"), (axes[1][1], "e2e", "E2E"))
    for ax, field, name in panels:
        p50 = [getattr(r.summary, field).p50 * 1000 for r in reports]
        p99 = [getattr(r.summary, field).p99 * 1000 for r in reports]
        ax.plot(xs, p50, marker="o", label="p50")
        ax.plot(xs, p99, marker="s", label="p99")
        ax.set_title(f"{name} (ms)")
        ax.legend()
    for row in axes:
        for ax in row:
            ax.set_xticks(xs)
            ax.set_xticklabels(labels, fontsize=7, rotation=20)
            ax.grid(alpha=0.3)
