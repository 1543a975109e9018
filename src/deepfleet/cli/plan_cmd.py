"""`deepfleet plan`: will it fit, and how should it be split? Also `--table`, the corrected
VRAM table of the planning document."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from deepfleet.catalog.hardware import UnknownDeviceError, get_device
from deepfleet.catalog.models import ModelFactsError, load_model_facts
from deepfleet.cli.common import console, fail, load_config
from deepfleet.planner import FORMATS, ClusterShape, Plan, PlanRequest, plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for
from deepfleet.planner.loadtime import bandwidth
from deepfleet.planner.report import formats_text, plan_json, plan_text
from deepfleet.planner.table import table_markdown, table_rows


def _overrides(request: PlanRequest, **values: Any) -> PlanRequest:
    """The request with every option the user gave on the command line."""
    given = {k: v for k, v in values.items() if v is not None}
    return replace(request, **given)


def _plans_from_file(
    file: Path,
    model: str | None,
    gpu: str | None,
    nodes: int | None,
    per_node: int | None,
    **values: Any,
) -> list[Plan]:
    cfg = load_config(file)
    specs = [s for s in cfg.models if model is None or model in (s.name, s.source)]
    if not specs:
        fail(
            f"{file} has no model named {model!r}; it has: " + ", ".join(s.name for s in cfg.models)
        )
    cluster = cluster_for(cfg)
    if gpu is not None:
        cluster = replace(cluster, device=get_device(gpu))
    cluster = replace(
        cluster, nodes=nodes or cluster.nodes, devices_per_node=per_node or cluster.devices_per_node
    )
    return [plan(model_facts_for(s), cluster, _overrides(request_for(s), **values)) for s in specs]


def _plan_from_options(
    model: str | None, gpu: str | None, nodes: int | None, per_node: int | None, **values: Any
) -> Plan:
    if model is None:
        fail("give --model (a catalog name or a folder holding config.json), or -f fleet.yaml", 2)
    if gpu is None:
        fail("give the hardware: --gpu G [--gpus-per-node N] [--nodes K], or -f fleet.yaml", 2)
    device = get_device(gpu)
    default_per_node = 1 if device.vendor == "cpu" else 8
    cluster = ClusterShape(device, nodes or 1, per_node or default_per_node)
    return plan(load_model_facts(model), cluster, _overrides(PlanRequest(), **values))


def plan_command(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Catalog name (e.g. DeepSeek-R1) or a folder with "
        "config.json; with -f, picks one of the file's models by name.",
    ),
    dtype: str | None = typer.Option(
        None,
        "--dtype",
        help="Weight format: bf16, fp16, fp8, int8 (W8A8), int4 (AWQ/GPTQ), or `all` to "
        "compare them; default: as the checkpoint ships.",
    ),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV cache dtype: auto, fp8."),
    gpu: str | None = typer.Option(
        None,
        "--gpu",
        help="Device: A100-40GB, A100-80GB, H100, H200, H800, H20, L40S, "
        "RTX-4090, Ascend-910B, CPU.",
    ),
    gpus_per_node: int | None = typer.Option(None, "--gpus-per-node", min=1),
    nodes: int | None = typer.Option(None, "--nodes", min=1),
    file: Path | None = typer.Option(
        None, "-f", "--file", help="Plan the models of a fleet.yaml on its cluster."
    ),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", min=16, help="Context per sequence; default: up to 32,768."
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        min=1,
        help="Full-length sequences the cluster must hold at once; default: as many as fit.",
    ),
    kv_space: int | None = typer.Option(
        None, "--cpu-kv-space", min=1, help="VLLM_CPU_KVCACHE_SPACE in GiB (CPU only)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    table: bool = typer.Option(
        False, "--table", help="Print the planning document's VRAM table, corrected."
    ),
    show_all: bool = typer.Option(False, "--all", help="List every layout that does not fit."),
    disk: float | None = typer.Option(None, "--disk-gb-s", help="Cold start: disk read, GB/s."),
    lan: float | None = typer.Option(None, "--lan-gb-s", help="Cold start: LAN, GB/s."),
    hub: float | None = typer.Option(None, "--hub-mb-s", help="Cold start: hub, MB/s."),
) -> None:
    """Plan a model on a cluster: layouts that fit, why others do not, and the pick.

    Exits 1 when nothing fits (printing the nearest alternatives), 2 on bad input.
    """
    if table:
        rows = table_rows()
        if as_json:
            typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        else:
            typer.echo(table_markdown(rows))
        return
    values: dict[str, Any] = {
        "weight_format": dtype,
        "kv_dtype": kv_dtype,
        "max_model_len": max_model_len,
        "concurrency": concurrency,
        "cpu_kv_space_gib": kv_space,
    }
    formats = [f for f in FORMATS if f not in {"fp16", "fp32"}] if dtype == "all" else [dtype]
    try:
        if file is not None:
            plans = [
                p
                for f in formats
                for p in _plans_from_file(
                    file, model, gpu, nodes, gpus_per_node, **{**values, "weight_format": f}
                )
            ]
        else:
            plans = [
                _plan_from_options(
                    model, gpu, nodes, gpus_per_node, **{**values, "weight_format": f}
                )
                for f in formats
            ]
    except (ModelFactsError, UnknownDeviceError, ValueError) as exc:
        fail(str(exc), code=2)
    if dtype == "all" and not as_json:
        typer.echo(formats_text(plans) + "\n")
        # Detail the checkpoint's own format when it fits, else the least quantized.
        shipped = [p for p in plans if p.weight_format.name == p.model.shipped_format]
        plans = [p for p in shipped + plans if p.feasible][:1] or plans[:1]
    given = load_config(file).cluster.bandwidth if file else None
    bw = bandwidth(
        disk or (given.disk_gb_s if given else None),
        lan or (given.lan_gb_s if given else None),
        hub or (given.hub_mb_s if given else None),
        given.engine_init_s if given else None,
    )
    if as_json:
        docs = [plan_json(p, bw) for p in plans]
        typer.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        for p in plans:
            typer.echo(plan_text(p, show_infeasible=10_000 if show_all else 12, bw=bw))
    if not all(p.feasible for p in plans):
        console.print("[bold red]error:[/] the request does not fit (see above)")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
