from __future__ import annotations

import pytest

from deepfleet.bench.client import RequestResult
from deepfleet.bench.stats import Slo, percentile, summarize


def result(ttft: float, itl: tuple[float, ...], ok: bool = True) -> RequestResult:
    return RequestResult(ok, "" if ok else "err", ttft, itl, ttft + sum(itl), 10, len(itl) + 1, 0.0)


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [([], 50, 0.0), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5), ([0.0, 10.0], 90, 9.0)],
)
def test_percentile_interpolates_linearly(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_summary_counts_tokens_and_failures() -> None:
    results = [result(0.1, (0.01, 0.01)), result(0.3, (0.02,)), result(0, (), ok=False)]
    s = summarize(results, duration_s=2.0)
    assert (s.requests, s.completed, s.failed) == (3, 2, 1)
    assert s.output_tokens == 5
    assert s.output_throughput == pytest.approx(2.5)
    assert s.total_token_throughput == pytest.approx((20 + 5) / 2)
    assert s.itl.p50 == pytest.approx(0.01)
    assert s.ttft.mean == pytest.approx(0.2)
    assert s.errors == ("err",)
    assert s.goodput is None


def test_goodput_counts_requests_within_every_slo() -> None:
    results = [result(0.1, (0.01,)), result(0.5, (0.01,)), result(0.1, (0.2,))]
    s = summarize(results, duration_s=1.0, slo=Slo(ttft_ms=200, tpot_ms=50))
    assert s.goodput == pytest.approx(1.0)
