"""The fleet's own shared KV store: with `kv_cache.offload: lmcache` and a `remote` tier
without `url`, the controller starts an LMCache server (or Redis) that every replica's LMCache
connector uses as its remote tier, and supervises it beside the gateway like the chat UI.

    kv_cache:
      offload: lmcache
      cpu_gib: 64
      remote: {kind: lmcache, host: 10.0.0.1, port: 65432}   # or {kind: redis, max_gib: 200}

It listens on `remote.host` only (loopback by default). Redis wants a password: generated
into the state dir's kv_store_password (0600) and given to redis-server in a 0600 config file
(kv_store.conf, not on the command line, where every local user could read it); the engines get
redis://:PASSWORD@host:port. The LMCache server has no authentication: keep it on loopback or a
private network.
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
from deepfleet.fleet.files import (
    KV_STORE_CONF,
    atomic_write,
    kv_store_password,
    log_file,
    private_dir,
)
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
        log=str(log_file(state_dir, SERVICE_ID)),
    )
    if remote.kind == "redis":
        argv = [argv[0], str(redis_conf(state_dir)), *argv[1:]]
    probe = f"tcp://{reachable_host(remote.host)}:{remote.port}"
    return Service(status, LaunchSpec(argv=argv), probe, policy=STORE_POLICY, before_replicas=True)


def redis_conf(state_dir: Path) -> Path:
    """redis-server's config file (its first argument): the password, 0600."""
    path = private_dir(state_dir) / KV_STORE_CONF
    atomic_write(path, f"requirepass {kv_store_password(state_dir)}\n")
    return path
