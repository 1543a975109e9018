"""Helpers shared by the CLI commands: the console, config loading, clean failures."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

from deepfleet import paths
from deepfleet.config import ConfigError, FleetConfig, default_config, load
from deepfleet.fleet.state import STATE_FILE, FleetState, read_state

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

FILE_OPT = typer.Option(
    None,
    "-f",
    "--file",
    help="fleet.yaml; without it the embedded default (the bundled model on vLLM's CPU build).",
)
STATE_OPT = typer.Option(
    None,
    "--state-dir",
    help="Fleet state dir (default: the config's "
    "state_dir, $DEEPFLEET_STATE_DIR, or the user state dir).",
)


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_config(file: Path | None) -> FleetConfig:
    if file is None:
        return default_config()
    try:
        return load(file)
    except ConfigError as exc:
        for line in exc.problems:
            console.print(f"[bold red]{exc.source}[/]: {line}")
        raise typer.Exit(2) from None


def resolve_state_dir(cfg: FleetConfig | None, override: Path | None) -> Path:
    if override is not None:
        return override.expanduser()
    return paths.state_dir(cfg.state_dir if cfg else None)


def current_state(state_dir: Path) -> FleetState | None:
    return read_state(state_dir / STATE_FILE)
