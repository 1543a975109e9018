"""Roofline decode: the experts-touched formula, and the H200 measurements as a bound."""

from __future__ import annotations

import random

import pytest

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner import Parallelism, decode_estimate, experts_touched, get_format
from tests.planner.measured import qwen2_7b_measured


@pytest.mark.parametrize(("tokens", "expected"), [(0, 0.0), (1, 8.0), (10_000, 256.0)])
def test_experts_touched_limits(tokens: int, expected: float) -> None:
    assert experts_touched(256, 8, tokens) == pytest.approx(expected)


@pytest.mark.parametrize("tokens", [4, 32, 128])
def test_experts_touched_matches_simulated_routing(tokens: int) -> None:
    rng = random.Random(7)
    trials = 400
    hit = sum(
        len({e for _ in range(tokens) for e in rng.sample(range(256), 8)}) for _ in range(trials)
    )
    assert experts_touched(256, 8, tokens) == pytest.approx(hit / trials, rel=0.02)


@pytest.mark.parametrize(("streams", "measured"), [(1, 211), (64, 11_499)])
def test_measured_h200_speed_is_below_the_roofline(streams: int, measured: float) -> None:
    # vLLM 0.26, H200: 64-token prompts, 256 output tokens, so ~200 tokens of context.
    est = decode_estimate(
        qwen2_7b_measured(),
        get_format("bf16", "bf16"),
        get_device("H200"),
        Parallelism(),
        streams,
        200,
    )
    assert 0.45 < measured / est.tokens_per_s < 1.0
    assert est.bound == "memory"


def test_tp_and_fp8_speed_up_one_stream() -> None:
    m, h100 = load_model_facts("DeepSeek-R1-Distill-Llama-70B"), get_device("H100")
    bf16, fp8 = get_format("bf16", "bf16"), get_format("fp8", "bf16")
    tp2 = decode_estimate(m, bf16, h100, Parallelism(tp=2), 1, 4096).tokens_per_s
    tp8 = decode_estimate(m, bf16, h100, Parallelism(tp=8), 1, 4096).tokens_per_s
    tp8_fp8 = decode_estimate(m, fp8, h100, Parallelism(tp=8), 1, 4096).tokens_per_s
    assert tp2 < tp8 < tp8_fp8


def test_moe_reads_fewer_experts_at_small_batch() -> None:
    m, h200 = load_model_facts("DeepSeek-R1"), get_device("H200")
    fmt, par = get_format(None, "fp8"), Parallelism(tp=8)
    one = decode_estimate(m, fmt, h200, par, 1, 1000)
    many = decode_estimate(m, fmt, h200, par, 256, 1000)
    # One token reads ~37B active parameters (8 of 256 experts), not all 671B.
    assert one.bytes_per_step * 8 < 60e9
    assert many.bytes_per_step > 3 * one.bytes_per_step
    assert many.tokens_per_s > 20 * one.tokens_per_s
