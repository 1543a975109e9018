"""A gateway on a host without the controller: a gateway pod of the Kubernetes bundle, or one
of the gateways `deepfleet render lb` puts behind HAProxy on other machines.

    python -m deepfleet.gateway.remote -f fleet.yaml --state-dir /var/lib/deepfleet-gateway

It needs `gateway.state` on PostgreSQL with `share_fleet` (the controller copies the fleet
state into the database: store/fleet_share.py). It writes gateway.json from the config's
gateway section, waits until the fleet state is in the database (saying why every 10 s, giving
up after `--wait-s`), then follows it into its own state dir (store/fleet_mirror.py, a thread
of this process) and runs the gateway (server.py) on that dir. Keys, limits and usage are the
shared database's, so any gateway serves any key within the same limits.

KV events: with `kv_cache.routing.relay_tcp` the controller's node relay publishes them on
TCP, and this gateway follows that relay (catching up from its snapshot). Without it, a local
engine's Unix socket cannot be reached from another host, while replicas placed by Ray
publish on their node's IP (fleet.json names the endpoint) and this gateway subscribes to
each of them itself (docs/lb.md says what that means for routing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepfleet.config.kvcache import read_routing_spec
from deepfleet.config.load import ConfigError, load
from deepfleet.config.schema import FleetConfig
from deepfleet.config.state import StateError
from deepfleet.fleet.files import atomic_write, private_dir
from deepfleet.fleet.state import STATE_FILE
from deepfleet.gateway import server
from deepfleet.gateway.store.fleet_mirror import FleetMirror

SETTINGS_FILE = "gateway.json"


def check(cfg: FleetConfig) -> str | None:
    """Why this config cannot run a remote gateway, naming the field; None when it can."""
    state = cfg.gateway.state
    if state.backend != "postgres":
        return (
            "gateway.state.backend: a gateway on another host shares keys, limits and the "
            "fleet state through PostgreSQL; set backend: postgres (docs/ha.md)"
        )
    if not state.share_fleet:
        return (
            "gateway.state.share_fleet: set it to true, so the controller copies the fleet "
            "state into the database for this gateway to follow"
        )
    return None


def write_settings(cfg: FleetConfig, state_dir: Path) -> Path:
    """gateway.json for this one gateway (no `instances`: it runs alone on this host)."""
    spec = cfg.gateway.model_copy(update={"instances": 1, "keys_db": state_dir / "keys.db"})
    path = private_dir(state_dir) / SETTINGS_FILE
    atomic_write(path, spec.model_dump_json(indent=1))  # 0600: it holds the metrics token
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m deepfleet.gateway.remote",
        description="a deepfleet gateway that follows the fleet state from the state database",
    )
    p.add_argument("-f", "--config", required=True, type=Path, help="the fleet's fleet.yaml")
    p.add_argument("--state-dir", required=True, type=Path, help="this gateway's own folder")
    p.add_argument("--host", help="address to bind (default: gateway.host)")
    p.add_argument("--port", type=int, help="port (default: gateway.port)")
    p.add_argument("--workers", type=int, help="worker processes (default: gateway.workers)")
    p.add_argument("--wait-s", type=float, default=900.0, help="longest wait for the state")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        sys.exit(str(exc))
    problem = check(cfg)
    if problem:
        sys.exit(problem)
    state_dir = args.state_dir.resolve()
    settings = write_settings(cfg, state_dir)
    try:
        mirror = FleetMirror(cfg.gateway.state.resolve_dsn(), state_dir)
    except StateError as exc:
        sys.exit(str(exc))

    def waiting(why: str) -> None:
        print(f"gateway: waiting for the fleet state: {why}", file=sys.stderr, flush=True)

    if not mirror.wait_first(args.wait_s, waiting):
        sys.exit(f"gateway: no fleet state in the database after {args.wait_s:.0f} s")
    mirror.start()
    relay = read_routing_spec(state_dir).relay_tcp  # the controller's, as mirrored
    try:
        server.main(
            [
                *(["--relay", f"tcp://{relay}"] if relay else []),
                "--state-file", str(state_dir / STATE_FILE),
                "--settings", str(settings),
                "--host", args.host or cfg.gateway.host,
                "--port", str(args.port or cfg.gateway.port),
                "--workers", str(args.workers or cfg.gateway.workers),
                "--log-level", args.log_level,
            ]
        )  # fmt: skip
    finally:
        mirror.stop()


if __name__ == "__main__":
    main()
