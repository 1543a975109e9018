"""Engine load from /metrics text, under each engine's metric names."""

from __future__ import annotations

import pytest

from deepfleet.engines.load import VLLM_METRICS, EngineLoad, LoadMetrics, parse_load
from deepfleet.engines.sglang import SGLANG_METRICS

VLLM_PAGE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 40.0
vllm:num_requests_swapped 9
"""
SGLANG_PAGE = """# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="m",engine_type="unified",tp_rank="0"} 7.0
sglang:num_queue_reqs{model_name="m",engine_type="unified",tp_rank="0"} 1.0
sglang:token_usage{model_name="m",engine_type="unified",tp_rank="0"} 0.5
sglang:prompt_tokens_total{model_name="m",is_streaming="true"} 60.0
sglang:prompt_tokens_total{model_name="m",is_streaming="false"} 40.0
sglang:cached_tokens_total{model_name="m",cache_source="device"} 30.0
sglang:prompt_tokens_created{model_name="m",is_streaming="true"} 1.7e9
"""


@pytest.mark.parametrize(
    ("page", "metrics", "load"),
    [
        (VLLM_PAGE, VLLM_METRICS, EngineLoad(5, 4, 0.25, 100.0, 40.0, at=9.0)),
        (SGLANG_PAGE, SGLANG_METRICS, EngineLoad(7, 1, 0.5, 100.0, 30.0, at=9.0)),
        (SGLANG_PAGE, VLLM_METRICS, None),  # none of the wanted names
        ("vllm:num_requests_running garbage\n", VLLM_METRICS, None),
        ("", VLLM_METRICS, None),
    ],
    ids=["vllm", "sglang", "other-engine", "bad-value", "empty"],
)
def test_parse_load(page: str, metrics: LoadMetrics, load: EngineLoad | None) -> None:
    assert parse_load(page, 9.0, metrics) == load
