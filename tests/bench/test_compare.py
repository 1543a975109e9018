from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from deepfleet.bench.client import RequestSpec
from deepfleet.bench.compare import Target, parse_target, run_compare, salted, slices
from deepfleet.bench.report import compare_dict, compare_markdown, ratios
from deepfleet.bench.runner import LoadShape
from deepfleet.bench.workloads import build_workload
from tests.bench.conftest import FakeEngine

Serve = Callable[[FakeEngine], Awaitable[str]]


async def test_compare_interleaves_targets_and_reports_ratios(serve: Serve) -> None:
    fast, slow = FakeEngine(tokens=4, gap_s=0.002), FakeEngine(tokens=4, gap_s=0.02)
    targets = [Target("fast", await serve(fast)), Target("slow", await serve(slow))]
    workload = build_workload("synthetic", 8, {"input_len": "20", "output_len": "4"})
    reports = await run_compare(targets, "m", workload, LoadShape(concurrency=4), rounds=2)
    assert [r.target for r in reports] == ["fast", "slow"]
    assert all(r.summary.completed == 8 for r in reports)
    assert len(fast.bodies) == len(slow.bodies) == 8
    first_fast = fast.bodies[0]["messages"][0]["content"]
    first_slow = slow.bodies[0]["messages"][0]["content"]
    assert first_fast.startswith("[fast] ")
    assert first_slow.startswith("[slow] ")
    assert reports[0].prefix_cache_hit_rate == pytest.approx(0.4)
    ratio = ratios(reports)[1]
    assert ratio.throughput_ratio < 1
    assert ratio.added_ttft_p50_ms > 0
    assert "| slow |" in compare_markdown(reports)
    assert compare_dict(reports)["baseline"] == "fast"


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("gw=http://h:8000", Target("gw", "http://h:8000")),
        (
            "gw=http://h:8000,http://e:1/metrics",
            Target("gw", "http://h:8000", ("http://e:1/metrics",)),
        ),
    ],
)
def test_parse_target(text: str, target: Target) -> None:
    assert parse_target(text) == target


def test_parse_target_rejects_missing_name() -> None:
    with pytest.raises(ValueError):
        parse_target("http://h:8000")


def test_slices_cover_every_chain_once() -> None:
    chains = [[RequestSpec(prompt=str(i))] for i in range(10)]
    parts = slices(chains, 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [c[0].prompt for p in parts for c in p] == [str(i) for i in range(10)]


def test_salt_goes_first() -> None:
    chat = RequestSpec(
        messages=({"role": "system", "content": "s"}, {"role": "user", "content": "u"})
    )
    assert salted(chat, "a").messages is not None
    assert salted(chat, "a").messages[0]["content"] == "[a] s"  # type: ignore[index]
    assert salted(RequestSpec(prompt="p"), "b").prompt == "[b] p"
