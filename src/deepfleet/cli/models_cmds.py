"""`deepfleet models prepare`: make a model ready to serve (the bundled one is converted)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from deepfleet.catalog import bundled
from deepfleet.cli import weights_cmd
from deepfleet.cli.common import console, fail, out


def prepare_bundled(force: bool = False) -> bundled.BundledModel:
    """Convert the bundled model if needed, with a live step line; fail with the fix."""
    if not force and bundled.is_intact(bundled.default_target()):
        return bundled.BundledModel(bundled.default_target())
    started = time.monotonic()
    with console.status("[bold]preparing the bundled model[/] (about 30 s, once)") as status:

        def step(text: str) -> None:
            status.update(
                f"[bold]preparing the bundled model[/]: {text} ({time.monotonic() - started:.0f}s)"
            )

        try:
            model = bundled.prepare(force=force, on_step=step)
        except bundled.BundledModelError as exc:
            fail(str(exc))
    console.print(f"bundled model ready in {time.monotonic() - started:.0f}s: {model.path}")
    return model


def register(app: typer.Typer) -> None:
    models_app = typer.Typer(help="Prepare models for serving.", no_args_is_help=True)

    @models_app.command("prepare")
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
        model = prepare_bundled(force)
        out.print(str(Path(model.path)))

    weights_cmd.register(models_app)
    app.add_typer(models_app, name="models")
