"""Where deepfleet keeps its files: one state dir per fleet, one cache dir per user."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """Prepared models and other re-creatable files. DEEPFLEET_CACHE_DIR overrides."""
    env = os.environ.get("DEEPFLEET_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("deepfleet"))


def state_dir(configured: Path | None = None) -> Path:
    """Logs, pid files and fleet state. The config's state_dir, else DEEPFLEET_STATE_DIR,
    else the user state dir."""
    if configured is not None:
        return configured.expanduser()
    env = os.environ.get("DEEPFLEET_STATE_DIR")
    return Path(env) if env else Path(platformdirs.user_state_dir("deepfleet"))
