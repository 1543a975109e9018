"""`deepfleet render TARGET -f fleet.yaml -o DIR`: deployment files generated from the config.

Targets: `k8s` (KubeRay + kustomize), `compose` (docker compose, and per-node scripts for
several hosts), `ascend` (hccn_tool network, checks and engine containers per node), `lb`
(an HAProxy config in front of the gateways).

Adding a target from another package (e.g. `render monitoring`): write, in that package's CLI
module, `def register_render(render: typer.Typer) -> None` that adds its command to `render`
(using `render_options` and `write_bundle` below if it renders a Bundle), and add that function
to RENDER_TARGETS at the end of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import typer

from deepfleet.cli.common import console, fail, load_config, out
from deepfleet.cli.monitoring_cmd import register_render as _register_monitoring
from deepfleet.config import FleetConfig
from deepfleet.deploy.ascend import render_ascend
from deepfleet.deploy.bundle import Bundle
from deepfleet.deploy.compose import render_compose
from deepfleet.deploy.k8s import render_k8s
from deepfleet.deploy.lb import LbError, render_lb
from deepfleet.deploy.plan import DeployError, DeployPlan, deploy_plan

Renderer = Callable[[DeployPlan, str], Bundle]

FILE_OPT = typer.Option(..., "-f", "--file", help="The fleet.yaml to render.")
OUT_OPT = typer.Option(..., "-o", "--out", help="Folder to write (created; must be empty).")
FORCE_OPT = typer.Option(False, "--force", help="Write into a folder that is not empty.")


def write_bundle(bundle: Bundle, out_dir: Path, force: bool) -> None:
    """Write `bundle` under `out_dir`, refusing a non-empty folder unless `force`; lists files
    left there from before that the bundle does not contain."""
    existing = (
        {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()}
        if out_dir.is_dir()
        else set()
    )
    if existing and not force:
        fail(f"{out_dir} is not empty; render into a new folder or pass --force", code=2)
    for path in bundle.write(out_dir):
        out.print(str(path))
    stale = sorted(existing - set(bundle.files))
    if stale:
        console.print(
            f"[yellow]note:[/] {len(stale)} file(s) in {out_dir} are not from this "
            f"render: {', '.join(stale)}"
        )


def plan_or_fail(cfg: FleetConfig, source: Path) -> DeployPlan:
    try:
        return deploy_plan(cfg)
    except DeployError as exc:
        _report(exc, source)


def _report(exc: DeployError, source: Path) -> NoReturn:
    for line in exc.problems:
        console.print(f"[bold red]{source}[/]: {line}")
    raise typer.Exit(2)


def _render(renderer: Renderer, file: Path, out_dir: Path, force: bool) -> None:
    cfg = load_config(file)
    dp = plan_or_fail(cfg, file)
    for m in dp.models:
        if m.note:
            console.print(f"[yellow]note:[/] models[{m.index}]: {m.note}")
    try:
        bundle = renderer(dp, file.read_text())
    except DeployError as exc:
        _report(exc, file)
    write_bundle(bundle, out_dir, force)
    console.print(f"[green]rendered[/] {len(bundle.files)} files; next: {out_dir / 'README.md'}")


def k8s(file: Path = FILE_OPT, out_dir: Path = OUT_OPT, force: bool = FORCE_OPT) -> None:
    """Kubernetes: KubeRay RayCluster, Services, volumes, Open-WebUI (kubectl apply -k)."""
    _render(render_k8s, file, out_dir, force)


def compose(file: Path = FILE_OPT, out_dir: Path = OUT_OPT, force: bool = FORCE_OPT) -> None:
    """docker compose for one host; per-node Ray containers and serve.sh for several."""
    _render(render_compose, file, out_dir, force)


def ascend(file: Path = FILE_OPT, out_dir: Path = OUT_OPT, force: bool = FORCE_OPT) -> None:
    """Ascend 910B per node: hccn_tool network, checks, MindIE or vllm-ascend container."""
    _render(render_ascend, file, out_dir, force)


def lb(
    file: Path = FILE_OPT,
    out_file: Path | None = typer.Option(
        None, "-o", "--out", help="File to write (default: standard output)."
    ),
    gateway: list[str] = typer.Option(
        [], "--gateway", help="A gateway's HOST:PORT (repeat for each); default: the config's."
    ),
    bind: str | None = typer.Option(
        None, "--bind", help="HOST:PORT HAProxy listens on (default: see docs/lb.md)."
    ),
) -> None:
    """HAProxy in front of the gateways: /health checks, leastconn, SSE timeouts (docs/lb.md)."""
    cfg = load_config(file)
    try:
        text = render_lb(cfg, gateway, bind)
    except LbError as exc:
        fail(str(exc), code=2)
    if out_file is None:
        print(text, end="")
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text)
    console.print(f"[green]rendered[/] {out_file}; check it with `haproxy -c -f {out_file}`")


def _register_lb(render: typer.Typer) -> None:
    render.command("lb")(lb)


def _register_k8s(render: typer.Typer) -> None:
    render.command("k8s")(k8s)


def _register_compose(render: typer.Typer) -> None:
    render.command("compose")(compose)


def _register_ascend(render: typer.Typer) -> None:
    render.command("ascend")(ascend)


RENDER_TARGETS: tuple[Callable[[typer.Typer], None], ...] = (
    _register_k8s,
    _register_compose,
    _register_ascend,
    _register_lb,
    _register_monitoring,
)


def register(app: typer.Typer) -> None:
    render = typer.Typer(
        help="Generate deployment files (Kubernetes, docker compose, Ascend) from fleet.yaml.",
        no_args_is_help=True,
    )
    for add in RENDER_TARGETS:
        add(render)
    app.add_typer(render, name="render")
