"""`deepfleet plan-pd`: aggregated against prefill/decode disaggregation for one workload."""

from __future__ import annotations

import json

import typer

from deepfleet.catalog.hardware import get_device
from deepfleet.catalog.models import load_model_facts
from deepfleet.planner.disagg import RequestClass, Workload
from deepfleet.planner.layout import ClusterShape
from deepfleet.planner.pd_plan import pd_plan_dict, plan_pd


def _mix(spec: str) -> tuple[RequestClass, ...]:
    """`SHARE:IN:OUT,...`, e.g. `0.5:8192:256,0.5:600:256`."""
    classes = []
    for part in spec.split(","):
        share, inp, out = part.split(":")
        classes.append(RequestClass(float(share), int(inp), int(out)))
    total = sum(c.share for c in classes)
    return tuple(RequestClass(c.share / total, c.input_tokens, c.output_tokens) for c in classes)


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
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    ) -> None:
        """Compare the best aggregated layout with the best prefill/decode split."""
        try:
            facts = load_model_facts(model)
            cluster = ClusterShape(get_device(gpu), nodes, gpus_per_node)
            work = Workload("custom", _mix(mix), ttft, itl)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        p = plan_pd(facts, cluster, work, link_bandwidth=link * 1e9 if link else None)
        if as_json:
            typer.echo(json.dumps(pd_plan_dict(p), indent=2))
            return
        typer.echo(
            f"{p.model} on {p.cluster}; targets TTFT p90 <= {ttft:g} s, ITL p90 <= {itl * 1e3:g} ms"
        )
        for o in sorted(p.options, key=lambda o: -o.goodput)[:8]:
            typer.echo(f"  {o.goodput:8.2f} req/s  {o.label}")
        typer.echo(f"recommended: {p.recommended.label if p.recommended else 'none'}")
        typer.echo(p.reason)
        if p.recommended is None:
            raise typer.Exit(1)
