"""`deepfleet config check`: validate a fleet.yaml and print each problem with its field path."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from deepfleet.cli.common import load_config, out
from deepfleet.config.schema import ModelSpec


def check(
    file: Path = typer.Option(..., "-f", "--file", help="The fleet.yaml to validate."),
    as_json: bool = typer.Option(False, "--json", help="Print the validated config as JSON."),
) -> None:
    """Validate FILE; exit 2 with one line per problem when it is not valid."""
    cfg = load_config(file)
    if as_json:
        out.print_json(json.dumps(cfg.model_dump(mode="json")))
        return
    replicas = ", ".join(f"{m.name} {_count(m)} on {m.engine}" for m in cfg.models)
    out.print(f"[green]ok[/] {file}: {cfg.cluster.mode} cluster, {replicas}")


def _count(m: ModelSpec) -> str:
    """`x2`, or a disaggregated model's pools: `prefill x2 + decode x1`."""
    if m.disaggregation is None:
        return f"x{m.replicas}"
    pd = m.disaggregation
    return f"prefill x{pd.prefill.replicas} + decode x{pd.decode.replicas}"


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Validate and inspect fleet.yaml files.", no_args_is_help=True)
    config_app.command("check")(check)
    app.add_typer(config_app, name="config")
