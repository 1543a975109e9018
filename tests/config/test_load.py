from pathlib import Path

import pytest

from deepfleet.config import ConfigError, load, validate

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("name", ["fleet.local.yaml", "fleet.r1-8x8.yaml"])
def test_examples_validate(name: str) -> None:
    cfg = load(EXAMPLES / name)
    assert cfg.models


def test_reference_plan_shape() -> None:
    cfg = load(EXAMPLES / "fleet.r1-8x8.yaml")
    assert (cfg.cluster.mode, cfg.cluster.nodes, cfg.cluster.devices_per_node) == ("ray", 8, 8)
    assert cfg.models[0].engine == "vllm"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"models": [{"name": "m", "replicsa": 2}]},
            "models[0].replicsa: unknown key (remove it or check its spelling)",
        ),
        (
            {"models": [{"name": "m"}], "gateway": {"port": "eighty"}},
            "gateway.port: Input should be a valid integer, unable to parse string as an integer"
            " (got 'eighty')",
        ),
        (
            {"models": [{"name": "m", "replicas": -1}]},
            "models[0].replicas: must be at least 1 or `auto` (got -1)",
        ),
        (
            {"models": [{"name": "m", "source": "/no/such/model"}]},
            "models[0].source: model folder '/no/such/model' does not exist (give a folder "
            "holding config.json, a hub id, or `bundled`)",
        ),
        ({"gateway": {}}, "models: required field is missing"),
        (
            {"models": [{"name": "m", "engine": "tgi"}]},
            "models[0].engine: unknown engine; available: mindie, sglang, vllm, vllm-ascend, "
            "vllm-cpu (got 'tgi')",
        ),
        (
            {"models": [{"name": "m"}, {"name": "m"}]},
            "(top level): model name 'm' appears twice in `models`",
        ),
        ([1, 2], "(top level): expected a mapping with a `models` list"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "negative-replicas",
        "missing-path",
        "no-models",
        "bad-engine",
        "duplicate-name",
        "not-a-mapping",
    ],
)
def test_bad_config_names_the_field(data: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(data)
    assert info.value.problems == [expected]


def test_local_folder_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"models": [{"name": "m", "source": str(tmp_path)}]})
    assert info.value.problems[0].endswith(
        "has no config.json (give a folder holding config.json, a hub id, or `bundled`)"
    )


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text("models:\n  - name: m\n    replicas: [1\n")
    with pytest.raises(ConfigError) as info:
        load(f)
    assert info.value.problems[0].startswith("line 4, column 1: invalid YAML")


def test_defaults_bind_loopback() -> None:
    cfg = validate({"models": [{"name": "m"}]})
    assert cfg.gateway.host == "127.0.0.1"
    assert cfg.models[0].trust_remote_code is False


def test_cli_check_prints_one_line_per_problem(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deepfleet.cli.main import app

    f = tmp_path / "fleet.yaml"
    f.write_text("models:\n  - name: m\n    replicas: -2\n    colour: blue\n")
    result = CliRunner().invoke(app, ["config", "check", "-f", str(f)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        f"{f}: models[0].replicas: must be at least 1 or `auto` (got -2)",
        f"{f}: models[0].colour: unknown key (remove it or check its spelling)",
    ]
