"""`deepfleet models prepare`: make a model ready to serve (the bundled one is converted)."""

from __future__ import annotations

import typer

from deepfleet.catalog.bundled import BundledModelError
from deepfleet.cli import spread_cmd, weights_cmd
from deepfleet.cli.common import console, fail, out
from deepfleet.cli.progress import Progress
from deepfleet.fleet.model_paths import prepare_bundled


def prepare(
    name: str = typer.Argument(..., help="`bundled` (the demo model SmolLM2-135M-Instruct)."),
    force: bool = typer.Option(False, "--force", help="Convert again even when intact."),
) -> None:
    """Prepare a model; idempotent (skips when the folder is complete)."""
    if name != "bundled":
        fail(
            f"only `bundled` can be prepared here; for {name!r} give a local folder or a "
            "hub id as the model's `source` in fleet.yaml"
        )
    with Progress(console) as progress:
        try:
            model = prepare_bundled(force, progress)
        except BundledModelError as exc:
            fail(str(exc))
    out.print(str(model.path))


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Prepare models for serving.", no_args_is_help=True)
    models.command("prepare")(prepare)
    weights_cmd.register(models)
    spread_cmd.register(models)
    app.add_typer(models, name="models")
