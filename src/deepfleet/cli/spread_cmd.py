"""`deepfleet models spread`: on the head, pull a model once, then every other node fetches what
it needs from the head over the LAN (fleet/ray/spread.py), with a bar per node.

Which files a node needs: everything, or with `--pp N` the shards of one pipeline stage (nodes
in Ray's order, the head first: node i runs stage i mod N) plus config and tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from deepfleet import paths
from deepfleet.cli.common import (
    FILE_OPT,
    STATE_OPT,
    console,
    fail,
    load_config,
    out,
    resolve_state_dir,
)
from deepfleet.fleet.launcher import LauncherError
from deepfleet.fleet.state import NodeStatus
from deepfleet.weights import cache
from deepfleet.weights.hubs import HubError, hub_for
from deepfleet.weights.pull import PullError
from deepfleet.weights.sources import parse_source
from deepfleet.weights.spread_plan import write_progress
from deepfleet.weights.stages import files_for_stages


def _folder(source: str) -> Path:
    """The head's verified folder for `source`: pulled first for hf:// and modelscope://."""
    from deepfleet.cli.weights_cmd import pull_with_progress

    src = parse_source(source)
    if src.pullable:
        try:
            return pull_with_progress(src, hub_for(src), paths.cache_dir()).path
        except (PullError, HubError) as exc:
            fail(str(exc))
    folder = src.path if src.kind == "local" and src.path else Path(source)
    if not cache.is_complete(folder):
        fail(
            f"{folder}: not a verified model folder (no {cache.MARKER}); spread a model that "
            "`deepfleet models pull` fetched"
        )
    return folder


def node_needs(folder: Path, nodes: list[NodeStatus], pp: int) -> dict[str, frozenset[str]]:
    """Files per node id: all, or stage (i mod pp) of the nodes in order."""
    names = list(cache.read_marker(folder)["files"])  # type: ignore[call-overload]
    return {
        n.node_id: frozenset(files_for_stages(folder, names, pp, [i % pp]))
        for i, n in enumerate(nodes)
    }


def _racks(pairs: list[str]) -> dict[str, str]:
    racks = {}
    for p in pairs:
        address, sep, rack = p.partition("=")
        if not sep or not rack:
            fail(f"--rack {p!r}: expected ADDRESS=RACK", 2)
        racks[address] = rack
    return racks


def spread_cmd(
    source: str = typer.Argument(..., help="hf://org/name[@rev], or a pulled folder."),
    pp: int = typer.Option(1, "--pp", min=1, help="Pipeline stages: node i gets stage i mod N."),
    rack: list[str] = typer.Option(
        [], "--rack", help="ADDRESS=RACK: one node per rack fetches from the head, the rest "
        "from it."),
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    as_json: bool = typer.Option(False, "--json", help="Per-node results as JSON."),
) -> None:  # fmt: skip
    """Spread a model from the head to every node of the cluster, verified on every node."""
    cfg = load_config(file)
    sdir = resolve_state_dir(cfg if file else None, state_dir)
    folder = _folder(source)
    from deepfleet.fleet.ray.connect import connect

    try:
        connect(cfg, sdir)
    except LauncherError as exc:
        fail(str(exc))
    import ray

    from deepfleet.fleet.ray.nodes import node_table
    from deepfleet.fleet.ray.spread import SpreadError

    try:
        nodes = [n for n in node_table(ray.nodes()) if n.alive]
        needs = node_needs(folder, nodes, pp)
        results = _run(folder, needs, nodes, _racks(rack), sdir, not as_json)
    except SpreadError as exc:
        fail(str(exc))
    finally:
        ray.shutdown()
    needed = {n.address: sum(_sizes(folder, needs[n.node_id])) for n in nodes}
    if as_json:
        out.print_json(
            json.dumps({"folder": str(folder), "needed_bytes": needed, "transfers": results})
        )
        return
    for r in results:
        console.print(
            f"{r['node']}: {r['files']} files, {r['size']:,} bytes, {r['fetched_bytes']:,} "
            f"fetched in {r['seconds']:.1f}s"
            + (" (already there)" if r["already_complete"] else "")
        )


def _sizes(folder: Path, names: frozenset[str]) -> list[int]:
    files: dict[str, Any] = dict(cache.read_marker(folder)["files"])  # type: ignore[call-overload]
    return [int(files[n]["size"]) for n in names]


def _run(
    folder: Path,
    needs: dict[str, frozenset[str]],
    nodes: list[NodeStatus],
    racks: dict[str, str],
    sdir: Path,
    show: bool,
) -> list[dict[str, Any]]:
    from deepfleet.fleet.ray.spread import spread

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=console, disable=not show) as bar:
        tasks: dict[str, Any] = {}

        def report(progress: dict[str, dict[str, Any]]) -> None:
            write_progress(sdir, folder.name, progress)
            for node, p in progress.items():
                if node not in tasks:
                    tasks[node] = bar.add_task(f"{node} <- {p.get('from')}", total=p["total"])
                bar.update(tasks[node], completed=p["done"], total=p["total"])

        return spread(folder, needs, nodes, racks=racks or None, on_progress=report)


def spread_text(data: dict[str, Any]) -> str:
    """`deepfleet status`'s lines for the last spread: one per node, bytes and state."""
    lines = [f"weights spread ({data.get('model', '?')}):"]
    for node, p in sorted(data.get("nodes", {}).items()):
        done, total = int(p.get("done", 0)), int(p.get("total", 0)) or 1
        lines.append(
            f"  {node:<16} {done / 1e9:8.2f} / {total / 1e9:.2f} GB {100 * done / total:5.1f}%  "
            f"{p.get('state', '?')} (from {p.get('from', '?')})"
        )
    return "\n".join(lines)


def register(models_app: typer.Typer) -> None:
    models_app.command("spread")(spread_cmd)
