"""Window accounting of the load generator and the scenario summaries (pure functions)."""

from __future__ import annotations

import pytest
from benchmarks.gpu.load import summarize
from benchmarks.gpu.scenarios import chats, overhead_summary, routing_summary


def test_window_counts_tokens_by_chunk_arrival() -> None:
    # sent at 0.5 (before the window), first chunk at 1.5, then every 0.5 s: 6 chunks of 2
    # tokens; window [1.0, 3.0) holds the chunks at 1.5, 2.0, 2.5 -> 6 tokens in 2 s
    early = (True, "", 0.5, 1.0, (0.5,) * 5, 12)
    # sent inside the window: its TTFT and ITL count
    inside = (True, "", 1.2, 0.1, (0.05, 0.05), 3)
    failed = (False, "HTTP 500", 1.5, 0.0, (), 0)
    late = (True, "", 3.5, 0.1, (), 1)
    s = summarize([early, inside, failed, late], 1.0, 3.0)
    assert s["output_tok_s"] == pytest.approx((6 + 3) / 2.0)
    assert (s["requests_sent"], s["requests_ok"], s["errors"]) == (2, 1, 1)
    assert s["ttft_p50_ms"] == pytest.approx(100.0)
    assert s["itl_p50_ms"] == pytest.approx(50.0)
    assert s["error_kinds"] == {"HTTP 500": 1}
    # every gap whose chunk arrived in the window, from any request (cut runs of long outputs)
    # inside: early's gaps arriving at 2.0 and 2.5 s (0.5 s), inside's two (0.05 s)
    assert s["itl_window_p99_ms"] == pytest.approx(500.0, rel=0.01)
    assert 50.0 <= s["itl_window_p50_ms"] <= 500.0
    assert s["ttft_all_p50_ms"] == pytest.approx(100.0)


def _run(target: str, conc: int, rnd: int, tok_s: float, ttft: float) -> dict[str, object]:
    return {
        "target": target, "concurrency": conc, "round": rnd, "output_tok_s": tok_s,
        "ttft_p50_ms": ttft, "ttft_p99_ms": ttft * 2, "itl_p50_ms": 5.0, "errors": 0,
    }  # fmt: skip


def test_overhead_summary_ratio_and_added_ttft() -> None:
    runs = [
        _run("direct", 64, 0, 11000, 100.0), _run("gw", 64, 0, 10900, 100.5),
        _run("gw", 64, 1, 10700, 101.0), _run("direct", 64, 1, 11100, 99.0),
    ]  # fmt: skip
    (row,) = overhead_summary(runs, ["direct", "gw"])
    assert row["throughput_ratio"] == pytest.approx(10800 / 11050, abs=1e-4)
    assert row["added_ttft_p50_ms"] == pytest.approx(1.25)
    assert row["throughput_ok"] is False and row["ttft_ok"] is False


def test_routing_summary() -> None:
    base = {"output_tok_s": 100.0, "ttft_p99_ms": 9.0, "duration_s": 10.0}
    runs = [
        base | {"policy": "kv_aware", "hit_tokens": 80, "queried_tokens": 100,
                "total_tok_s": 2000.0, "ttft_p50_ms": 50.0},
        base | {"policy": "round_robin", "hit_tokens": 40, "queried_tokens": 100,
                "total_tok_s": 1000.0, "ttft_p50_ms": 100.0},
    ]  # fmt: skip
    s = routing_summary(runs)
    assert (s["kv_aware"]["hit_rate"], s["round_robin"]["hit_rate"]) == (0.8, 0.4)
    assert (s["throughput_ratio"], s["ttft_p50_ratio"]) == (2.0, 0.5)


def test_chats_share_system_prompts_per_group() -> None:
    chains = chats(1, groups=2, users=3, rounds=2, system_len=20, history_len=10, max_tokens=4)
    assert len(chains) == 6 and all(len(c) == 2 for c in chains)
    systems = {c[0].messages[0]["content"] for c in chains if c[0].messages}
    assert len(systems) == 2
    first, second = chains[0]
    assert first.messages is not None and second.messages is not None
    assert list(second.messages[: len(first.messages)]) == list(first.messages)
