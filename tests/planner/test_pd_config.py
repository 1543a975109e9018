"""planner/pd_config.py: the plan-pd pick as a fleet.yaml, per platform, and what it refuses
to write (the worked examples' files and bundles: tests/deploy/test_planned.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.cli.main import app
from deepfleet.config import validate
from deepfleet.planner.disagg import long_prompt_workload
from deepfleet.planner.layout import ClusterShape, PlanRequest
from deepfleet.planner.pd_config import ConfigError, config_yaml, fleet_config, model_name
from deepfleet.planner.pd_plan import PdPlan, plan_pd

R1 = load_model_facts("DeepSeek-R1")
HUB = "deepseek-ai/DeepSeek-R1"


def _plan(device: str, fmt: str | None = None) -> tuple[ClusterShape, PdPlan]:
    cluster = ClusterShape(get_device(device), 8, 8)
    return cluster, plan_pd(R1, cluster, long_prompt_workload(), PlanRequest(weight_format=fmt))


def test_model_name_from_the_catalog_name() -> None:
    assert model_name(HUB) == "deepseek-r1"


def test_ascend_pools_get_vllm_ascend_mooncake_and_the_planned_format() -> None:
    cluster, p = _plan("Ascend-910B", "int8")
    assert p.pd is not None
    data = fleet_config(
        replace(p, recommended=p.pd),
        cluster,
        source="/models/DeepSeek-R1-W8A8",
        weight_format="int8",
    )
    model = data["models"][0]
    assert (model["engine"], model["dtype"]) == ("vllm-ascend", "int8")
    assert model["disaggregation"]["connector"] == "mooncake"  # `auto` on vllm-ascend
    validate(data, "test")


def test_a_pipelined_pool_is_refused_naming_the_pool() -> None:
    # R1 on A100-40GB: each pool's replica is a pipeline of 3 or more nodes.
    cluster, p = _plan("A100-40GB")
    with pytest.raises(ConfigError, match=r"the prefill pool's layout \(tp 8 x pp 3 x1\) uses "
                       r"pipeline parallelism.*disaggregation\.prefill cannot"):  # fmt: skip
        fleet_config(replace(p, recommended=p.pd), cluster, source=HUB)


def test_nothing_recommended_is_refused() -> None:
    cluster, p = _plan("Ascend-910B")  # the fp8 checkpoint: no fp8 kernels on the 910B
    assert p.recommended is None
    with pytest.raises(ConfigError, match="nothing to write"):
        fleet_config(p, cluster, source=HUB)


def test_a_config_that_would_not_pass_check_is_not_written(tmp_path: Path) -> None:
    out = tmp_path / "fleet.yaml"
    result = CliRunner().invoke(
        app, ["plan-pd", "--nodes", "1", "--mix", "1:600:256", "--mode", "local",
              "--source", str(tmp_path / "missing"), "--write-config", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "models[0].source: model folder" in result.output
    assert not out.exists()


def test_written_header_says_where_it_came_from() -> None:
    cluster, p = _plan("H200")
    data = fleet_config(p, cluster, source=HUB)
    text = config_yaml(p, data, "deepfleet plan-pd --write-config FILE")
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert head[0] == "# Written by: deepfleet plan-pd --write-config FILE"
    assert any("Recommended: P/D 5:3" in line for line in head)
    assert yaml.safe_load(text) == data
    assert all(len(line) <= 100 for line in head)
