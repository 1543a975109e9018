"""The live controller's predictive sizing: the planner's capacity of one replica for the mix
the gateway measures (fleet/replica_capacity.py), and the token counters it reads."""

from __future__ import annotations

import pytest

from deepfleet.autoscale.signals import parse_gateway
from deepfleet.config import FleetConfig
from deepfleet.engines.base import ReplicaPlan
from deepfleet.fleet.replica_capacity import PlannerCapacity

R1_7B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


def fleet(device: str, itl_ms: float = 30) -> tuple[PlannerCapacity, FleetConfig]:
    cfg = FleetConfig.model_validate(
        {
            "cluster": {"device": device},
            "models": [
                {
                    "name": "r1",
                    "source": R1_7B,
                    "engine": "vllm",
                    "replicas": {"min": 1, "max": 8},
                    "autoscale": {"itl_p90_ms": itl_ms},
                }
            ],
        }
    )
    return PlannerCapacity(cfg), cfg


def plan(cfg: FleetConfig) -> ReplicaPlan:
    return ReplicaPlan(cfg.models[0], "r1-0", R1_7B, "127.0.0.1", 8000, max_model_len=8192)


def test_a_gpu_replica_has_a_capacity_for_the_mix() -> None:
    capacity, cfg = fleet("H200")
    spec, p = cfg.models[0], plan(cfg)
    # the diurnal benchmark's mix (mean 998 in / 1,997 out): 6.39 req/s at 30 ms there
    reasoning = capacity(spec, p, 998.4, 1996.8)
    assert reasoning is not None and 4.0 < reasoning < 9.0, reasoning
    short = capacity(spec, p, 256, 256)
    assert short is not None and short > 4 * reasoning  # shorter answers: more requests/s
    tighter, tight = fleet("H200", itl_ms=12)
    assert (tighter(tight.models[0], p, 998.4, 1996.8) or 0) < reasoning  # tighter: fewer
    assert capacity(spec, None, 998.4, 1996.8) is None  # no replica planned yet
    assert capacity(spec, p, 0, 0) is None  # nothing measured


@pytest.mark.parametrize("device", ["CPU", "no-such-gpu"])
def test_without_a_calibrated_model_it_scales_reactively(device: str) -> None:
    capacity, cfg = fleet(device)
    assert capacity(cfg.models[0], plan(cfg), 998.4, 1996.8) is None


def test_the_token_counters_per_model() -> None:
    text = """\
# TYPE deepfleet_prompt_tokens counter
deepfleet_prompt_tokens_total{model="a"} 1000.0
deepfleet_prompt_tokens_total{model="b"} 50.0
# TYPE deepfleet_output_tokens counter
deepfleet_output_tokens_total{model="a"} 4000.0
# TYPE deepfleet_waiting_for_replica gauge
deepfleet_waiting_for_replica{model="b"} 2.0
"""
    scrape = parse_gateway(text, 1.0)
    assert scrape.prompt == {"a": 1000.0, "b": 50.0}
    assert scrape.output == {"a": 4000.0}
    assert scrape.waiting == {"b": 2}
