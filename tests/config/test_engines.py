"""The `engine` field accepts exactly the engines that have an adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.config.engines import ENGINE_NAMES
from deepfleet.config.schema import ModelSpec
from deepfleet.engines import known_engines


def test_the_schema_names_exactly_the_registered_adapters() -> None:
    assert sorted(ENGINE_NAMES) == known_engines()


@pytest.mark.parametrize("engine", known_engines())
def test_every_registered_engine_is_accepted(engine: str) -> None:
    assert ModelSpec(name="m", engine=engine).engine == engine


@pytest.mark.parametrize("engine", ["tgi", "VLLM", "vllm_cpu", ""])
def test_config_check_refuses_an_unknown_engine_naming_the_field(
    tmp_path: Path, engine: str
) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(f"models:\n  - name: m\n  - name: n\n    engine: '{engine}'\n")
    result = CliRunner().invoke(app, ["config", "check", "-f", str(f)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    available = ", ".join(known_engines())
    assert result.output.strip() == (
        f"{f}: models[1].engine: unknown engine; available: {available} (got {engine!r})"
    )
