"""The doctor's weights checks on this machine: the load format's extra package, and model
folders on network file systems (read at network speed: a slow cold start)."""

from __future__ import annotations

from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.fleet.doctor.checks import Finding
from deepfleet.fleet.doctor.holdings import cached_folder
from deepfleet.weights.loading import missing_package, slow_fs_warning


def local_findings(cfg: FleetConfig) -> list[Finding]:
    """This machine: the load format's extra package, and folders on network file systems."""
    out: list[Finding] = []
    for i, m in enumerate(cfg.models):
        fmt = m.engine_args.get("load_format")
        why = missing_package(fmt) if fmt else None
        if why:
            out.append(Finding("warn", "local", "load_format", f"models[{i}]: {why}"))
        folder = Path(m.source).expanduser() if m.is_local_path else cached_folder(cfg, i)
        slow = slow_fs_warning(folder) if folder is not None and folder.exists() else None
        if slow:
            out.append(Finding("warn", "local", "disk", f"models[{i}] {m.name}: {slow}"))
    return out
