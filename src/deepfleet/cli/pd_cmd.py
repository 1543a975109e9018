"""`deepfleet plan-pd`: aggregated against prefill/decode disaggregation for one workload,
and with `--write-config FILE` the recommended layout as a fleet.yaml (planner/pd_config.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.config import validate
from deepfleet.deploy.plan import DeployError, deploy_plan
from deepfleet.planner.disagg import RequestClass, Workload
from deepfleet.planner.layout import ClusterShape, PlanRequest
from deepfleet.planner.pd_config import ConfigError, config_yaml, fleet_config
from deepfleet.planner.pd_plan import PdPlan, pd_plan_dict, plan_pd

MODES = ("local", "ray", "kubernetes")


def _mix(spec: str) -> tuple[RequestClass, ...]:
    """`SHARE:IN:OUT,...`, e.g. `0.5:8192:256,0.5:600:256`."""
    classes = []
    for part in spec.split(","):
        share, inp, out = part.split(":")
        classes.append(RequestClass(float(share), int(inp), int(out)))
    total = sum(c.share for c in classes)
    return tuple(RequestClass(c.share / total, c.input_tokens, c.output_tokens) for c in classes)


def _command(opts: dict[str, Any]) -> str:
    """The plan-pd command line that reproduces a plan (for the written config's header)."""
    flags = " ".join(f"--{k} {v}" for k, v in opts.items() if v is not None)
    return f"deepfleet plan-pd {flags} --write-config FILE"


def _config(
    p: PdPlan, cluster: ClusterShape, source: str | None, name: str | None, mode: str | None,
    dtype: str | None,
) -> tuple[dict[str, Any] | None, str | None]:  # fmt: skip
    """The fleet.yaml of the pick, or None and why not."""
    try:
        data = fleet_config(
            p, cluster, source=source or p.model, name=name, mode=mode, weight_format=dtype
        )
    except ConfigError as e:
        return None, str(e)
    return data, None


def _render_notes(data: dict[str, Any] | None) -> list[str]:
    """What `deepfleet render` (and so the bundles) would refuse in a written config: the
    planner may pick a layout the launchers cannot run (data-parallel attention across nodes)."""
    if data is None:
        return []
    try:
        deploy_plan(validate(data, "the written config"))
    except DeployError as e:
        return [f"`deepfleet render` refuses it: {line}" for line in e.problems]
    return []


def register(app: typer.Typer) -> None:
    @app.command("plan-pd")
    def plan_pd_command(
        model: str = typer.Option("DeepSeek-R1", "--model", "-m", help="Catalog name."),
        gpu: str = typer.Option("H200", "--gpu", help="Device (see `deepfleet plan --help`)."),
        nodes: int = typer.Option(8, "--nodes", min=1),
        gpus_per_node: int = typer.Option(8, "--gpus-per-node", min=1),
        mix: str = typer.Option(
            "0.5:8192:256,0.5:600:256",
            "--mix",
            help="Request classes SHARE:INPUT_TOKENS:OUTPUT_TOKENS, comma separated.",
        ),
        ttft: float = typer.Option(2.0, "--ttft", help="TTFT target, seconds (p90)."),
        itl: float = typer.Option(0.05, "--itl", help="ITL target, seconds (p90)."),
        link: float | None = typer.Option(
            None, "--link-gbps", help="KV transfer link per node, GB/s; default: the network."
        ),
        dtype: str | None = typer.Option(
            None,
            "--dtype",
            help="Weight format (bf16, fp8, int8, int4); default: as the checkpoint ships.",
        ),
        write_config: Path | None = typer.Option(
            None,
            "--write-config",
            help="Write the recommended layout as a fleet.yaml to this file (replaced).",
        ),
        source: str | None = typer.Option(
            None, "--source", help="The written model's source; default: its hub id."
        ),
        name: str | None = typer.Option(
            None, "--name", help="The written model's name; default: e.g. deepseek-r1."
        ),
        mode: str | None = typer.Option(
            None,
            "--mode",
            help="The written cluster.mode: local, ray, kubernetes; default: ray on several "
            "nodes, else local.",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print the comparison, and the fleet.yaml as `config`, as JSON."
        ),
    ) -> None:
        """Compare the best aggregated layout with the best prefill/decode split; with
        --write-config, write the pick as a fleet.yaml for `config check` and `render`."""
        try:
            if mode is not None and mode not in MODES:
                raise ValueError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
            facts = load_model_facts(model)
            cluster = ClusterShape(get_device(gpu), nodes, gpus_per_node)
            work = Workload("custom", _mix(mix), ttft, itl)
            p = plan_pd(
                facts,
                cluster,
                work,
                PlanRequest(weight_format=dtype),
                link_bandwidth=link * 1e9 if link else None,
            )
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        data, why_not = _config(p, cluster, source, name, mode, dtype)
        notes = _render_notes(data)
        if write_config is not None:
            if data is None:
                typer.echo(f"error: --write-config: {why_not}", err=True)
                raise typer.Exit(1)
            command = _command(
                {"model": model, "gpu": gpu, "nodes": nodes, "gpus-per-node": gpus_per_node,
                 "mix": mix, "ttft": f"{ttft:g}", "itl": f"{itl:g}", "dtype": dtype,
                 "link-gbps": f"{link:g}" if link else None, "mode": mode, "source": source,
                 "name": name}
            )  # fmt: skip
            write_config.write_text(config_yaml(p, data, command))
        if as_json:
            doc = pd_plan_dict(p)
            doc["config"] = data
            doc["config_notes"] = notes
            if why_not:
                doc["config_error"] = why_not
            typer.echo(json.dumps(doc, indent=2))
            return
        typer.echo(
            f"{p.model} on {p.cluster}; targets TTFT p90 <= {ttft:g} s, ITL p90 <= {itl * 1e3:g} ms"
        )
        for o in sorted(p.options, key=lambda o: -o.goodput)[:8]:
            typer.echo(f"  {o.goodput:8.2f} req/s  {o.label}")
        typer.echo(f"recommended: {p.recommended.label if p.recommended else 'none'}")
        typer.echo(p.reason)
        if write_config is not None:
            typer.echo(f"wrote {write_config}; next: deepfleet config check -f {write_config}")
            for note in notes:
                typer.echo(f"note: {note}", err=True)
        if p.recommended is None:
            raise typer.Exit(1)
