"""Prefill/decode disaggregation in the planner: the pick flips with prompt length, transfer
bytes follow the KV formula, impossible splits are refused with the reason."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner.disagg import RequestClass, Workload, transfer_bytes
from deepfleet.planner.layout import ClusterShape
from deepfleet.planner.pd_plan import SplitError, plan_pd, split

R1 = load_model_facts("DeepSeek-R1")
H200 = ClusterShape(get_device("H200"), 8, 8)


def _work(prompt: int) -> Workload:
    return Workload(f"{prompt}", (RequestClass(0.5, prompt, 256), RequestClass(0.5, 600, 256)))


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [(600, "aggregated"), (1024, "aggregated"), (4096, "pd"), (8192, "pd"), (12288, "pd")],
)
def test_recommendation_flips_to_pd_as_prompts_grow(prompt: int, kind: str) -> None:
    """Half the requests carry `prompt` tokens, half are 600-token chats (R1, 8 x 8 H200)."""
    p = plan_pd(R1, H200, _work(prompt))
    assert p.recommended is not None
    assert p.recommended.kind == kind, p.reason
    assert p.reason.startswith("P/D" if kind == "pd" else "aggregated")


def test_prefill_bound_mix_goes_back_to_aggregated() -> None:
    """At 16K-token prompts prefill is most of the work: every device is wanted for it, and a
    split's goodput is within the margin, so aggregated wins again."""
    p = plan_pd(R1, H200, _work(16384))
    assert p.recommended is not None and p.recommended.kind == "aggregated"
    assert "of the work" in p.reason


@pytest.mark.parametrize(
    ("tokens", "kv_dtype", "expected"),
    [
        (1, "auto", 576 * 61 * 2),  # MLA latent 512 + rope 64, 61 layers, bf16
        (8192, "auto", 8192 * 70_272),
        (8192, "fp8", 8192 * 576 * 61),
    ],
)
def test_transfer_bytes_follow_r1_mla_cache(tokens: int, kv_dtype: str, expected: int) -> None:
    assert transfer_bytes(R1, tokens, kv_dtype) == expected


def test_pd_transfer_time_is_bytes_over_link() -> None:
    options = split(R1, H200, 2, _work(8192), link_bandwidth=50e9)
    mean = int(0.5 * 8192 * 70_272 + 0.5 * 600 * 70_272)
    assert options[0].transfer_bytes == mean
    assert options[0].transfer_s == pytest.approx(mean / 50e9)


@pytest.mark.parametrize(
    ("cluster", "nodes", "message"),
    [
        (ClusterShape(get_device("H200"), 1, 8), 1, "has no second pool"),
        (H200, 0, "prefill nodes must be 1 to 7"),
        (H200, 8, "prefill nodes must be 1 to 7"),
        (
            ClusterShape(get_device("A100-40GB"), 8, 8),
            1,
            "the prefill pool (1 x 8 A100-40GB) cannot hold deepseek-ai/DeepSeek-R1: weights need",
        ),
    ],
)
def test_impossible_splits_are_refused(cluster: ClusterShape, nodes: int, message: str) -> None:
    with pytest.raises(SplitError, match=re.escape(message)):
        split(R1, cluster, nodes, _work(8192))


def test_cli_json() -> None:
    from deepfleet.cli.main import app

    result = CliRunner().invoke(app, ["plan-pd", "--json", "--mix", "1:600:256"])
    assert result.exit_code == 0, result.output
    assert '"kind": "aggregated"' in result.output.split('"reason"')[0]
