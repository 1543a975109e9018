"""`deepfleet doctor [-f fleet.yaml]`: a preflight, one line per finding with its fix."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
import yaml
from pydantic import ValidationError

from deepfleet.cli.common import FILE_OPT, STATE_OPT, console, out, resolve_state_dir
from deepfleet.config import ConfigError, FleetConfig, default_config, load
from deepfleet.fleet.doctor import Finding, collect, judge_node, port_findings
from deepfleet.fleet.doctor.checks import expectations
from deepfleet.fleet.launcher import LauncherError

_COLORS = {"ok": "green", "warn": "yellow", "error": "red"}


def _config(file: Path | None) -> tuple[FleetConfig, list[Finding]]:
    """The config, also when only its model folders are missing (the doctor reports those
    per node); other problems become findings."""
    if file is None:
        return default_config(), []
    try:
        return load(file), []
    except ConfigError as exc:
        try:
            cfg = FleetConfig.model_validate(yaml.safe_load(file.read_text()))
        except (ValidationError, yaml.YAMLError, OSError):
            for line in exc.problems:
                console.print(f"[bold red]{exc.source}[/]: {line}")
            raise typer.Exit(2) from None
        rest = [p for p in exc.problems if not p.startswith("models[")]
        return cfg, [Finding("error", "config", "config", p) for p in rest]


def run_doctor(cfg: FleetConfig, state_dir: Path) -> list[Finding]:
    exp = expectations(cfg)
    findings: list[Finding] = []
    if cfg.cluster.mode == "ray":
        from deepfleet.fleet.doctor.cluster import cluster_findings

        try:
            findings += cluster_findings(cfg, state_dir, exp)
        except LauncherError as exc:
            findings.append(Finding("error", "cluster", "ray", str(exc)))
            findings += judge_node(collect("local", exp.paths), exp)
    else:
        findings += judge_node(collect("local", exp.paths), exp)
    from deepfleet.fleet.doctor.exposure import exposure_findings
    from deepfleet.fleet.doctor.weights import local_findings

    exposure = exposure_findings(
        state_dir,
        cfg.gateway.host,
        cfg.gateway.port,
        dashboard_port=cfg.cluster.dashboard_port,
        ray_head=cfg.cluster.head,
    )
    return findings + local_findings(cfg) + port_findings(cfg) + exposure


def doctor(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Findings as JSON."),
) -> None:
    """Check every node before `up`: driver and CUDA (or CPU), vLLM, /dev/shm, the NIC,
    model folders or disk for downloads, ports, reachability between nodes, clocks.

    Exits 1 when a finding is an error.
    """
    cfg, findings = _config(file)
    findings += run_doctor(cfg, resolve_state_dir(cfg, state_dir))
    if as_json:
        out.print_json(json.dumps([asdict(f) for f in findings]))
    else:
        for f in findings:
            out.print(f"[{_COLORS[f.level]}]{f.line()}[/]", markup=True, highlight=False)
        errors = sum(f.level == "error" for f in findings)
        out.print(f"\n{errors} error(s), {sum(f.level == 'warn' for f in findings)} warning(s)")
    if any(f.level == "error" for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(doctor)
