"""`deepfleet node start --head | --join HEAD:PORT` and `deepfleet node stop`: this machine's
Ray node, started with safe defaults (see deepfleet.fleet.ray.start)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from deepfleet.cli.common import (
    FILE_OPT,
    STATE_OPT,
    console,
    fail,
    load_config,
    out,
    resolve_state_dir,
)
from deepfleet.fleet.ray.records import NodeRecord, living, stop_processes
from deepfleet.fleet.ray.start import (
    DASHBOARD_PORT,
    OBJECT_STORE_GIB,
    RAY_PORT,
    NodeOptions,
    NodeSetupError,
    NodeStartError,
    check_no_node,
    choose_node_ip,
    choose_token,
    ray_executable,
    ray_start_command,
    start_node,
)


def _print_started(o: NodeOptions, record: NodeRecord, notes: list[str], state_dir: Path) -> None:
    role = "head" if o.head else "worker"
    nic = f" ({o.interface})" if o.interface else ""
    out.print(f"[bold green]Ray {role} node started[/]: node IP {o.node_ip}{nic}")
    out.print(f"  cluster address {record.address}")
    if o.head and o.dashboard:
        out.print(f"  dashboard: http://127.0.0.1:{o.dashboard_port} (this machine only)")
    out.print(f"  object store: {o.object_store_bytes / 2**30:.1f} GiB")
    if o.interface:
        out.print(f"  GLOO/NCCL/TP/HCCL sockets on {o.interface}")
    if o.cores:
        out.print(f"  engines on this node bind cores {o.cores}")
    for note in notes:
        out.print(f"  {note}")
    if record.ports:
        out.print(f"  fixed ports: {', '.join(map(str, record.ports))}")
    out.print(
        f"  {len(record.processes)} processes, recorded in {state_dir / 'ray-node.json'}; "
        "`deepfleet node stop` stops them"
    )
    if o.head:
        join = f"deepfleet node start --join {record.address}"
        if o.interface:
            join += f" --interface {o.interface}"
        copy = f" (copy {record.token_path} to each node first)" if record.token_path else ""
        out.print(f"\nJoin the other nodes{copy}:\n  {join}")
        out.print("Then, here: deepfleet up -f fleet.yaml")


def start(
    head: bool = typer.Option(False, "--head", help="Start the cluster's head node."),
    join: str | None = typer.Option(None, "--join", help="Join the cluster at HEAD:PORT."),
    port: int = typer.Option(RAY_PORT, "--port", help="Head: the cluster's (GCS) port."),
    file: Path | None = FILE_OPT,
    interface: str | None = typer.Option(
        None, "--interface", help="NIC of the cluster network (default: the config's)."
    ),
    node_ip: str | None = typer.Option(
        None, "--node-ip", help="Address this node advertises (default: the NIC's)."
    ),
    num_cpus: int | None = typer.Option(None, "--num-cpus", min=0),
    num_gpus: int | None = typer.Option(None, "--num-gpus", min=0),
    object_store_gib: float = typer.Option(
        OBJECT_STORE_GIB, "--object-store-gib", min=0.1, help="Ray object store size."
    ),
    temp_dir: str | None = typer.Option(None, "--temp-dir", help="Ray's temp dir."),
    dashboard: bool = typer.Option(
        True, "--dashboard/--no-dashboard", help="Head: Ray's dashboard on 127.0.0.1."
    ),
    dashboard_port: int | None = typer.Option(
        None,
        "--dashboard-port",
        help=f"Head: default the config's cluster.dashboard_port, else {DASHBOARD_PORT}.",
    ),
    port_base: int | None = typer.Option(
        None,
        "--port-base",
        help="Fixed ports from here (node manager, object manager, agents, metrics, "
        "workers at +10..+109): for firewalls, or several nodes on one host.",
    ),
    cores: str | None = typer.Option(
        None, "--cores", help="CPU engines on this node bind these cores, e.g. 0-7."
    ),
    auth: bool = typer.Option(
        True, "--auth/--no-auth", help="Ray token authentication (where Ray has it)."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Token file (default: ~/.ray/auth_token)."
    ),
    state_dir: Path | None = STATE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command; start nothing."),
) -> None:
    """Start Ray on this machine with safe defaults and print how to join it."""
    if head == bool(join):
        fail("give exactly one of --head or --join HEAD:PORT", 2)
    cfg = load_config(file) if file else None
    nic = interface or (cfg.cluster.network.interface if cfg else None)
    sdir = resolve_state_dir(cfg, state_dir)
    try:
        ip = choose_node_ip(node_ip, nic)
    except NodeStartError as exc:
        fail(str(exc), 2)
    try:
        check_no_node(sdir)
        token, notes = choose_token(head, auth, token_file, create=not dry_run)
        o = NodeOptions(
            head=head,
            node_ip=ip,
            join=join,
            port=port,
            interface=nic,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            object_store_bytes=int(object_store_gib * 2**30),
            temp_dir=temp_dir,
            dashboard=dashboard,
            dashboard_port=dashboard_port
            or (cfg.cluster.dashboard_port if cfg else DASHBOARD_PORT),
            port_base=port_base,
            cores=cores,
            token_path=token,
            ray=ray_executable(),
        )
        if dry_run:
            argv, env = ray_start_command(o)
            out.print(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
            out.print(shlex.join(argv))
            return
        with console.status(f"starting the Ray {'head' if head else 'worker'} node"):
            record = start_node(o, sdir)
    except NodeSetupError as exc:
        if exc.output:
            console.print(exc.output)
        fail(str(exc))
    _print_started(o, record, notes, sdir)


def stop(
    file: Path | None = FILE_OPT,
    state_dir: Path | None = STATE_OPT,
    grace: float = typer.Option(10, "--grace", help="Seconds between SIGTERM and SIGKILL."),
) -> None:
    """Stop the Ray node `deepfleet node start` started here, and everything under it
    (its workers and the engines they host); other Ray processes are left alone."""
    sdir = resolve_state_dir(load_config(file) if file else None, state_dir)
    record = NodeRecord.load(sdir)
    if record is None:
        out.print(
            f"no Ray node started by deepfleet from {sdir} (`ray stop` stops every Ray "
            "process of this host)"
        )
        return
    count = stop_processes(living(record.processes), grace)
    (sdir / "ray-node.json").unlink(missing_ok=True)
    out.print(f"stopped the Ray {record.role} node {record.node_ip} ({count} processes)")


def register(app: typer.Typer) -> None:
    node = typer.Typer(
        help="This machine's Ray node for cluster mode: start (head or join) and stop.",
        no_args_is_help=True,
    )
    node.command("start")(start)
    node.command("stop")(stop)
    app.add_typer(node, name="node")
