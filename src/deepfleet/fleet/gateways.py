"""Several gateway processes behind HAProxy on one host (`gateway.instances: N`).

With `workers: N` one gateway process group shares a port: a crash of its master takes the
whole front door with it. With `instances: N` each gateway is a process of its own on
127.0.0.1:port+1..port+N, supervised like any other, and HAProxy (deepfleet.deploy.haproxy)
listens on the configured host:port in front of them: a gateway that dies fails only the
streams it carried, and HAProxy sends new requests to the others (docs/lb.md). They share the
key store and follow the same fleet.json, as workers do.

The controller's `gateway` supervisor runs instance 0; instances 1..N-1 and HAProxy (`lb`) are
companion services, so `down`, status and adoption treat them as they treat any service.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.files import atomic_write
from deepfleet.fleet.haproxy import Backend, haproxy_config
from deepfleet.fleet.supervisor import SupervisorPolicy
from deepfleet.net import is_loopback

HAPROXY_CONFIG = "haproxy.cfg"
LOOPBACK = "127.0.0.1"


class LoadBalancerError(Exception):
    """HAProxy cannot run here; the message says how to install it or what to change."""


def instance_address(cfg: FleetConfig, index: int) -> tuple[str, int]:
    """Where gateway `index` listens: the configured address for a single gateway, else a
    loopback port after the one HAProxy takes."""
    g = cfg.gateway
    if g.instances == 1:
        return g.host, g.port
    return LOOPBACK, g.port + 1 + index


def instance_policy(cfg: FleetConfig, stop_grace_s: float = 15.0) -> SupervisorPolicy:
    """Stopping, a gateway lets its requests finish for drain_grace_s before SIGKILL."""
    grace = max(stop_grace_s, cfg.gateway.drain_grace_s + 5)
    return SupervisorPolicy(startup_timeout_s=60, stop_grace_s=grace)


def front_host(cfg: FleetConfig, has_keys: bool) -> str:
    """HAProxy's bind address: the configured one, but loopback while no API key exists (as
    a single gateway does: an open API is never put on the network by default)."""
    host = cfg.gateway.host
    if not is_loopback(host) and not has_keys:
        print(
            f"WARNING: no API key exists, so HAProxy listens only on {LOOPBACK}, not on {host}. "
            "Create one with `deepfleet keys create --name NAME` and restart.",
            file=sys.stderr,
            flush=True,
        )
        return LOOPBACK
    return host


def write_haproxy_config(cfg: FleetConfig, state_dir: Path, bind_host: str) -> Path:
    backends = [
        Backend(f"gateway-{i}", *instance_address(cfg, i)) for i in range(cfg.gateway.instances)
    ]
    path = state_dir / HAPROXY_CONFIG
    atomic_write(path, haproxy_config(backends, bind_host, cfg.gateway.port, cfg.gateway))
    return path


def haproxy_spec(config: Path) -> LaunchSpec:
    binary = shutil.which("haproxy")
    if binary is None:
        raise LoadBalancerError(
            "gateway.instances > 1 runs HAProxy in front of the gateways, and `haproxy` is not "
            "on PATH: install it (Debian/Ubuntu: `apt-get install -y haproxy`) or set "
            "gateway.instances: 1"
        )
    return LaunchSpec(argv=[binary, "-db", "-f", str(config)])
