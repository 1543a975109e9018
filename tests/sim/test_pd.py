"""The P/D simulator on a few dozen requests: both layouts finish every request, and P/D keeps
long prefills out of the decode steps."""

from __future__ import annotations

from dataclasses import replace

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import ClusterShape, plan
from deepfleet.planner.disagg import Pool, long_prompt_workload
from deepfleet.planner.kv import kv_bytes_per_token
from deepfleet.sim.pd import simulate

R1 = load_model_facts("DeepSeek-R1")
CLUSTER = ClusterShape(get_device("H200"), 2, 8)


def _pool(nodes: int) -> Pool:
    sub = replace(CLUSTER, nodes=nodes)
    p = plan(R1, sub, alternatives=False)
    assert p.recommended is not None
    return Pool(R1, p.weight_format, sub, p.recommended)


def test_pd_and_aggregated_finish_and_pd_has_steady_itl() -> None:
    work = replace(
        long_prompt_workload(),
        classes=tuple(replace(c, output_tokens=32) for c in long_prompt_workload().classes),
    )
    kvb = kv_bytes_per_token(R1, 2)
    agg = simulate(work, 6.0, _pool(2), duration_s=5.0, kv_bytes_per_token=kvb)
    pd = simulate(work, 6.0, _pool(1), _pool(1), duration_s=5.0, kv_bytes_per_token=kvb)
    assert 15 <= agg.requests == pd.requests <= 60
    assert agg.ttft.p50 > 0 and pd.ttft.p50 > 0
    assert pd.itl.p99 < agg.itl.p99
    assert 0 < pd.goodput <= pd.requests / 5.0
