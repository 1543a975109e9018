"""The fleet's own shared KV store: with `kv_cache.offload: lmcache` and a `remote` tier
without `url`, the controller starts an LMCache server (or Redis) that every replica's LMCache
connector uses as its remote tier, and supervises it beside the gateway like the chat UI.

    kv_cache:
      offload: lmcache
      cpu_gib: 64
      remote: {kind: lmcache, host: 10.0.0.1, port: 65432}   # or {kind: redis, max_gib: 200}
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.schema import FleetConfig
from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.engines.offload import shared_store_launch
from deepfleet.engines.registry import get_adapter
from deepfleet.fleet.controller import Service
from deepfleet.fleet.ports import port_in_use
from deepfleet.fleet.state import ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy
from deepfleet.net import is_loopback, reachable_host

SERVICE_ID = "kv-store"
# The store answers no HTTP; a TCP connect every few seconds tells it is up.
STORE_POLICY = SupervisorPolicy(startup_timeout_s=120, health_interval_s=5.0)


class KvStoreError(Exception):
    """The fleet's own KV store cannot start here; the message names the field to change."""


def store_python(plans: list[ReplicaPlan], spec: KvCacheSpec) -> str:
    """The interpreter of the engines that offload (LMCache is installed beside them), else
    ours."""
    offloading = (p for p in plans if get_adapter(p.model.engine).kv_offload(spec) is not None)
    return next((p.python for p in offloading), sys.executable)


def kv_store_service(cfg: FleetConfig, state_dir: Path, plans: list[ReplicaPlan]) -> Service | None:
    """The Service of the fleet's own KV store, or None when the config wants none."""
    spec = cfg.kv_cache
    argv = shared_store_launch(spec, store_python(plans, spec))
    remote = spec.remote
    if argv is None or remote is None:
        return None
    if cfg.cluster.mode != "local" and (is_loopback(remote.host) or remote.host == "0.0.0.0"):
        raise KvStoreError(
            f"kv_cache.remote.host: engines on other nodes cannot reach {remote.host}; set it "
            "to this node's address (the head's), or give kv_cache.remote.url of a running store"
        )
    if remote.kind == "redis" and shutil.which(argv[0]) is None:
        raise KvStoreError(
            "kv_cache.remote.kind: redis needs redis-server on PATH (apt install redis-server), "
            "or give kv_cache.remote.url of a running store"
        )
    if port_in_use(remote.host, remote.port):
        raise KvStoreError(
            f"kv_cache.remote.port: {remote.host}:{remote.port} is already in use (a store "
            "left running?); stop it, choose another port, or point kv_cache.remote.url at it"
        )
    status = ReplicaStatus(
        replica_id=SERVICE_ID,
        model="*",
        engine=f"{remote.kind}-store",
        url=remote.address,
        log=str(state_dir / "logs" / f"{SERVICE_ID}.log"),
    )
    probe = f"tcp://{reachable_host(remote.host)}:{remote.port}"
    return Service(status, LaunchSpec(argv=argv), probe, policy=STORE_POLICY, before_replicas=True)
