"""`deepfleet plan`: JSON shape, exit codes, -f fleet.yaml and the corrected table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deepfleet.cli import plan_cmd

REFERENCE = ["--model", "DeepSeek-R1", "--gpu", "A100-40GB", "--gpus-per-node", "8", "--nodes", "8"]


@pytest.fixture
def run() -> object:
    app = typer.Typer()
    plan_cmd.register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `plan` a sub-command
        pass

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["plan", *args])


def test_json_is_one_object_with_the_documented_fields(run) -> None:  # type: ignore[no-untyped-def]
    result = run(*REFERENCE, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) >= {"model", "layouts", "recommended"}
    assert doc["model"]["kv_bytes_per_token"] == 70_272
    assert abs(doc["model"]["params"] - 671e9) / 671e9 < 0.01
    assert doc["model"]["weight_bytes"] > 0
    for layout in doc["layouts"]:
        assert {"tp", "pp", "dp", "feasible", "reason", "kv_tokens", "decode_tokens_per_s"} <= set(
            layout
        )
        assert set(layout["per_device_bytes"]) >= {"weights", "kv", "activation", "reserve"}
    assert doc["recommended"]["feasible"] and doc["recommended"]["tp"] == 8


def test_text_names_the_recommendation_and_the_refusals(run) -> None:  # type: ignore[no-untyped-def]
    result = run(*REFERENCE, "--dtype", "all")
    assert result.exit_code == 0, result.output
    for line in ("bf16", "fp8", "int8", "int4"):
        assert f"  {line}" in result.stdout
    assert "recommended: tp 8 x pp" in result.stdout
    assert "does not fit:" in result.stdout and "weights need" in result.stdout


def test_infeasible_request_exits_1_with_alternatives(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--model", "DeepSeek-R1", "--gpu", "H100", "--dtype", "bf16")
    assert result.exit_code == 1
    assert "nothing fits: weights need" in result.stdout
    assert "instead: weights in int4" in result.stdout
    assert "nodes of 8 x H100" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "GPT-5", "--gpu", "H100"], "unknown model"),
        (["--model", "DeepSeek-R1", "--gpu", "TPU"], "unknown device"),
        (["--model", "DeepSeek-R1"], "give the hardware"),
        (["--model", "DeepSeek-R1", "--gpu", "H100", "--dtype", "nf4"], "unknown weight format"),
    ],
)
def test_bad_input_exits_2(run, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run(*args)
    assert result.exit_code == 2 and message in result.output


def test_plans_the_models_of_a_fleet_file(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(
        "cluster: {mode: ray, nodes: 2, devices_per_node: 8, device: Ascend-910B}\n"
        "models:\n"
        "  - name: r1\n"
        "    source: deepseek-ai/DeepSeek-R1\n"
        "    engine: vllm-ascend\n"
        "    dtype: int8\n"
        "    max_model_len: 16384\n"
    )
    result = run("-f", str(fleet), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["weight_format"] == "int8"
    assert doc["recommended"]["engine_args"]["max_model_len"] == 16384


def test_table_puts_the_old_number_beside_the_new(run) -> None:  # type: ignore[no-untyped-def]
    result = run("--table")
    assert result.exit_code == 0, result.output
    r1 = next(line for line in result.stdout.splitlines() if line.startswith("| DeepSeek-R1 |"))
    assert "~1,543 GB" in r1 and "671.03B" in r1 and "fp8" in r1
    assert "Assumptions:" in result.stdout and "70,272 bytes per token" in result.stdout
