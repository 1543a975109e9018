from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from deepfleet.bench.benchmark import BenchReport
from deepfleet.bench.client import RequestResult
from deepfleet.bench.report import markdown, to_dict
from deepfleet.bench.stats import summarize
from deepfleet.bench.sweep import saturation_rate, sweep_rates


def report(rate: float, served: float, name: str = "t") -> BenchReport:
    results = tuple(
        RequestResult(True, "", 0.1, (0.01, 0.02), 0.13, 10, 3, i / served) for i in range(10)
    )
    summary = summarize(results, duration_s=10 / served)
    return BenchReport(name, "http://x", "m", "synthetic", f"rate {rate:g}/s", summary, 0.5,
                       False, 0.0, results)  # fmt: skip


def test_markdown_has_one_row_per_report() -> None:
    text = markdown([report(1, 1), report(2, 2)])
    assert text.count("\n| t |") == 2
    assert "50.0%" in text
    assert "results" not in to_dict(report(1, 1))


def test_saturation_is_the_last_rate_served() -> None:
    reports = [report(1, 1), report(2, 2), report(4, 2.5)]
    assert saturation_rate(reports) == 2


def test_sweep_rates_parse() -> None:
    assert sweep_rates("1,2,4") == [1, 2, 4]
    assert sweep_rates("auto") is None
    with pytest.raises(ValueError):
        sweep_rates("0")


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
@pytest.mark.parametrize("count", [1, 3])
def test_plot_writes_a_png(tmp_path: Path, count: int) -> None:
    from deepfleet.bench.plot import plot_reports

    out = tmp_path / "chart.png"
    plot_reports([report(i + 1, i + 1) for i in range(count)], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
