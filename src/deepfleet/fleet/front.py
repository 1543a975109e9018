"""The front door's companion services for `gateway.instances: N` (deepfleet.fleet.gateways):
the node's KV event relay, gateways 1..N-1 and HAProxy, as Services the controller supervises
beside gateway 0.

The relay (deepfleet.routing.node_relay) starts first, before the engines, so it sees every
KV event from the first; each gateway instance follows it instead of the engines (its
gateway.json says `instances`), so all of them route with the same index, and one that starts
later catches up from the relay's snapshot (docs/kv-routing.md, "Several gateways")."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.controller import Service, gateway_launch, keys_db_path, local_url
from deepfleet.fleet.files import log_file
from deepfleet.fleet.gateways import (
    front_host,
    haproxy_spec,
    instance_address,
    instance_policy,
    write_haproxy_config,
)
from deepfleet.fleet.state import STATE_FILE, ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy
from deepfleet.kvcache.relay import node_relay_endpoint
from deepfleet.kvcache.snapshot import snapshot_endpoint

RELAY_ID = "kv-relay"

KeyCheck = Callable[[Path], bool]
"""Whether the key store at a path holds an API key (the CLI asks deepfleet.gateway.keys)."""


def no_keys(path: Path) -> bool:
    return False


def _status(state_dir: Path, rid: str, engine: str, url: str) -> ReplicaStatus:
    return ReplicaStatus(rid, "*", engine, url, log=str(log_file(state_dir, rid)))


def relay_service(state_dir: Path) -> Service:
    """The node's KV event relay; healthy once its snapshot socket accepts connections."""
    state_file = state_dir / STATE_FILE
    endpoint = node_relay_endpoint(state_file)
    argv = [sys.executable, "-m", "deepfleet.routing.node_relay", "--state-file", str(state_file)]
    return Service(
        _status(state_dir, RELAY_ID, "relay", endpoint),
        LaunchSpec(argv=argv),
        snapshot_endpoint(endpoint),
        policy=SupervisorPolicy(startup_timeout_s=30, stop_grace_s=5),
        before_replicas=True,
    )


def front_services(
    cfg: FleetConfig, state_dir: Path, has_keys: KeyCheck = no_keys
) -> Sequence[Service]:
    """Nothing for one gateway (but the KV event relay when `kv_cache.routing.relay_tcp`
    serves gateways on other hosts); else the KV event relay, the other gateways, then
    HAProxy on gateway.port (on loopback unless `has_keys` finds an API key). Raises
    LoadBalancerError when HAProxy is not installed."""
    n = cfg.gateway.instances
    if n == 1:
        return [relay_service(state_dir)] if cfg.kv_cache.routing.relay_tcp else ()
    host = front_host(cfg, has_keys(keys_db_path(cfg, state_dir)))
    spec = haproxy_spec(write_haproxy_config(cfg, state_dir, host))
    out = [relay_service(state_dir)]
    for i in range(1, n):
        url = local_url(*instance_address(cfg, i))
        out.append(
            Service(
                _status(state_dir, f"gateway-{i}", "gateway", url),
                gateway_launch(cfg, state_dir, index=i),
                url + "/health",
                policy=instance_policy(cfg),
            )
        )
    front = local_url(cfg.gateway.host, cfg.gateway.port)
    lb = Service(
        _status(state_dir, "lb", "haproxy", front),
        spec,
        front + "/health",  # answered by a gateway behind it: HAProxy routes
        policy=SupervisorPolicy(startup_timeout_s=90, stop_grace_s=5),
    )
    return [*out, lb]
