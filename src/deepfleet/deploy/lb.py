"""`deepfleet render lb`: the HAProxy config for a fleet's gateways (deepfleet.fleet.haproxy
says why each setting), for wherever HAProxy runs.

Which gateways: the ones named (`--gateway HOST:PORT`, for several hosts or nodes); else, with
`gateway.instances: N`, the N loopback gateways `deepfleet up` starts (the file is then the one
`up` runs, to read or adapt); else the one gateway (on the Ray head in cluster mode). HAProxy
listens on `--bind`, by default the gateway's own address with `instances > 1` (up's layout),
else 0.0.0.0:8080 (a separate node in front of the gateways)."""

from __future__ import annotations

from collections.abc import Sequence

from deepfleet.config.schema import FleetConfig
from deepfleet.fleet.gateways import instance_address
from deepfleet.fleet.haproxy import Backend, haproxy_config
from deepfleet.net import reachable_host

DEFAULT_BIND = ("0.0.0.0", 8080)


class LbError(ValueError):
    """An address that cannot be used; the message names the flag."""


def parse_address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LbError(f"{flag} {text!r}: expected HOST:PORT (e.g. 10.0.0.1:8000)")
    return host, int(port)


def lb_backends(cfg: FleetConfig, gateways: Sequence[str] = ()) -> list[Backend]:
    if gateways:
        addresses = [parse_address(g, "--gateway") for g in gateways]
    elif cfg.gateway.instances > 1:
        addresses = [instance_address(cfg, i) for i in range(cfg.gateway.instances)]
    else:
        head = cfg.cluster.head if cfg.cluster.mode == "ray" else None
        addresses = [(head or reachable_host(cfg.gateway.host), cfg.gateway.port)]
    return [Backend(f"gateway-{i}", host, port) for i, (host, port) in enumerate(addresses)]


def render_lb(cfg: FleetConfig, gateways: Sequence[str] = (), bind: str | None = None) -> str:
    """The HAProxy config text; raises LbError for a malformed --gateway or --bind."""
    if bind:
        host, port = parse_address(bind, "--bind")
    elif cfg.gateway.instances > 1 and not gateways:
        host, port = cfg.gateway.host, cfg.gateway.port
    else:
        host, port = DEFAULT_BIND
    backends = lb_backends(cfg, gateways)
    if (host, port) in {(b.host, b.port) for b in backends}:
        raise LbError(f"--bind {host}:{port} is a gateway's own address; choose another port")
    return haproxy_config(backends, host, port, cfg.gateway)
