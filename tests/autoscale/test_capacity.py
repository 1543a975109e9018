"""A replica's capacity (requests/s within the ITL target) on hand-made step models."""

from __future__ import annotations

import pytest

from deepfleet.autoscale import replica_capacity


def host_bound(seqs: int, context: int) -> float:
    """10 ms a step, or 0.1 ms per sequence when that is longer."""
    return max(0.01, 1e-4 * seqs)


@pytest.mark.parametrize(
    ("max_seqs", "kv_tokens", "prefill_s", "expected"),
    [
        (1000, 10**9, 0.0, 50.0),  # ITL 30 ms at 300 sequences: 300 / (200 x 0.03)
        (100, 10**9, 0.0, 50.0),  # 100 sequences at 10 ms: 100 / (200 x 0.01)
        (1000, 200 * 300, 0.0, 200 / (200 * 0.02)),  # KV holds 200 sequences (20 ms)
        (1000, 10**9, 0.005, 40.0),  # prefill takes 5 ms a request: ITL / (1 - rate x 5 ms)
    ],
)
def test_capacity(max_seqs: int, kv_tokens: int, prefill_s: float, expected: float) -> None:
    got = replica_capacity(
        host_bound,
        lambda tokens: prefill_s,
        input_tokens=100,
        output_tokens=200,
        itl_s=0.03,
        max_seqs=max_seqs,
        kv_tokens=kv_tokens,
    )
    assert got == pytest.approx(expected, rel=0.03)
