"""`deepfleet render`: writes the bundle, refuses a non-empty folder, reports problems with
the file and the field."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from deepfleet.cli.main import app

ROOT = Path(__file__).parents[2]


def test_render_ascend_example(tmp_path: Path) -> None:
    out = tmp_path / "ascend"
    example = ROOT / "examples/fleet.ascend-2x8.yaml"
    result = CliRunner().invoke(app, ["render", "ascend", "-f", str(example), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "nodes/00-node01/network.sh").stat().st_mode & 0o111
    assert (out / "fleet.yaml").read_text() == example.read_text()
    again = CliRunner().invoke(app, ["render", "ascend", "-f", str(example), "-o", str(out)])
    assert again.exit_code == 2 and "is not empty" in again.output
    forced = CliRunner().invoke(
        app, ["render", "ascend", "-f", str(example), "-o", str(out), "--force"]
    )
    assert forced.exit_code == 0


def test_render_reports_the_field(tmp_path: Path) -> None:
    example = ROOT / "examples/fleet.ascend-2x8.yaml"
    result = CliRunner().invoke(
        app, ["render", "compose", "-f", str(example), "-o", str(tmp_path / "c")]
    )
    assert result.exit_code == 2
    assert f"{example}: models: the compose target runs the official vLLM image" in result.output
    assert not (tmp_path / "c").exists()
