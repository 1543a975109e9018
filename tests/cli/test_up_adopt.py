"""How `deepfleet up` tells what it adopted from a dead controller, and refuses `--json`
without `--detach`."""

from __future__ import annotations

import io

from rich.console import Console
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.cli.progress import Progress
from deepfleet.fleet.events import Adopted


def test_progress_shows_adopted_and_replaced() -> None:
    buf = io.StringIO()
    Progress(Console(file=buf, width=200))(Adopted(["m-0", "gateway"], ["m-1"]))
    text = buf.getvalue()
    assert "adopted what a dead controller left running (same processes, not restarted): " in text
    assert "m-0, gateway" in text and "replaced (another config, or not wanted): m-1" in text


def test_up_json_needs_detach(tmp_path: object) -> None:
    r = CliRunner().invoke(app, ["up", "--json", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "--json needs --detach" in r.output
