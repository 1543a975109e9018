"""The config a running fleet runs (applied.json in the state dir): written when the fleet
starts and after each `deepfleet apply`, read by `apply` to compare a new config with."""

from __future__ import annotations

from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.fleet.files import atomic_write, private_dir

APPLIED_FILE = "applied.json"


def write_applied(cfg: FleetConfig, state_dir: Path) -> Path:
    """The config the fleet runs, for `deepfleet apply` to compare a new one with (0600)."""
    path = private_dir(state_dir) / APPLIED_FILE
    atomic_write(path, cfg.model_dump_json(indent=1))
    return path


def read_applied(state_dir: Path) -> FleetConfig | None:
    """The config the running fleet runs; None when there is none or it cannot be read."""
    try:
        return FleetConfig.model_validate_json((state_dir / APPLIED_FILE).read_bytes())
    except (OSError, ValueError):
        return None
