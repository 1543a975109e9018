"""Engine arguments for KV offloading and sharing (fleet.yaml `kv_cache:`), for vLLM on GPUs.

- offload `cpu`: vLLM's native OffloadingConnector, `cpu_gib` of CPU memory per replica.
- offload `lmcache`: LMCacheConnectorV1 in the engine, configured by LMCACHE_* variables: a CPU
  tier, optionally a local disk tier and a remote tier that every replica shares (an LMCache
  server or Redis; `shared_store_launch` gives the command to start the fleet's own).
Both need `kv_role: kv_both` (each replica stores and loads). vLLM's CPU build has no device
memory to offload from, so other engines get no arguments; `offload_plans` says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.base import ReplicaPlan

GPU_ENGINES = ("vllm",)


@dataclass(frozen=True)
class EngineExtras:
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def kv_transfer_config(spec: KvCacheSpec) -> dict[str, object] | None:
    """The `--kv-transfer-config` value for `spec`, or None when nothing is offloaded."""
    if spec.offload == "cpu":
        assert spec.cpu_gib is not None
        return {
            "kv_connector": "OffloadingConnector",
            "kv_role": "kv_both",
            "kv_connector_extra_config": {"cpu_bytes_to_use": int(spec.cpu_gib * (1 << 30))},
        }
    if spec.offload == "lmcache":
        return {"kv_connector": "LMCacheConnectorV1", "kv_role": "kv_both"}
    return None


def lmcache_env(spec: KvCacheSpec, remote_url: str | None = None) -> dict[str, str]:
    """LMCache's variables; `remote_url`: where this deployment's engines reach the shared
    store when that differs from the config's address (a container's service name)."""
    env = {
        "LMCACHE_CHUNK_SIZE": str(spec.chunk_size),
        "LMCACHE_LOCAL_CPU": "True" if spec.cpu_gib else "False",
        "LMCACHE_MAX_LOCAL_CPU_SIZE": f"{spec.cpu_gib or 0:g}",
    }
    if spec.disk is not None:
        env["LMCACHE_LOCAL_DISK"] = f"file://{spec.disk.path.expanduser()}/"
        env["LMCACHE_MAX_LOCAL_DISK_SIZE"] = f"{spec.disk.gib:g}"
    if spec.remote is not None:
        env["LMCACHE_REMOTE_URL"] = remote_url or spec.remote.address
        env["LMCACHE_REMOTE_SERDE"] = "naive"
    return env


def offload_args(spec: KvCacheSpec, engine: str) -> EngineExtras:
    """Extra flags and environment for one replica of a model served by `engine`."""
    config = kv_transfer_config(spec)
    if config is None or engine not in GPU_ENGINES:
        return EngineExtras()
    flags = ["--kv-transfer-config", json.dumps(config, separators=(",", ":"))]
    env = lmcache_env(spec) if spec.offload == "lmcache" else {}
    return EngineExtras(flags, env)


def offload_plans(
    plans: Sequence[ReplicaPlan], spec: KvCacheSpec, remote_url: str | None = None
) -> tuple[list[ReplicaPlan], list[str]]:
    """Every plan with its engine's offload arguments, and a note per model that gets none.

    The transfer config becomes an engine default (a model's `engine_args` may still set its
    own `kv_transfer_config`); LMCache's variables join the model's `engine_env`, which wins.
    """
    config = kv_transfer_config(spec)
    if config is None:
        return list(plans), []
    out: list[ReplicaPlan] = []
    skipped: dict[str, str] = {}
    for plan in plans:
        model = plan.model
        if model.engine not in GPU_ENGINES:
            skipped[model.name] = model.engine
            out.append(plan)
            continue
        env = lmcache_env(spec, remote_url) if spec.offload == "lmcache" else {}
        out.append(
            replace(
                plan,
                model=model.model_copy(update={"engine_env": {**env, **model.engine_env}}),
                engine_defaults={**plan.engine_defaults, "kv_transfer_config": config},
            )
        )
    notes = [
        f"kv_cache.offload: {spec.offload!r} needs vLLM on GPUs (engine: vllm); model {name!r} "
        f"runs on {engine}, which has no device memory to offload from, so its replicas start "
        "without KV offloading (set kv_cache.offload: none to silence this)"
        for name, engine in skipped.items()
    ]
    return out, notes


def shared_store_launch(
    spec: KvCacheSpec, python: str = sys.executable, host: str | None = None
) -> list[str] | None:
    """The command of the shared KV store the fleet starts itself (remote tier without `url`),
    listening on `host` (default: the config's `remote.host`)."""
    remote = spec.remote
    if spec.offload != "lmcache" or remote is None or remote.url:
        return None
    bind = host or remote.host
    if remote.kind == "lmcache":
        return [python, "-m", "lmcache.v1.server", bind, str(remote.port)]
    # A cache, not a database: no snapshots, no append-only file.
    argv = ["redis-server", "--bind", bind, "--port", str(remote.port),
            "--save", "", "--appendonly", "no"]  # fmt: skip
    if remote.max_gib is not None:
        argv += ["--maxmemory", f"{int(remote.max_gib * (1 << 30))}",
                 "--maxmemory-policy", "allkeys-lru"]  # fmt: skip
    return argv


def container_store(spec: KvCacheSpec, host: str) -> tuple[list[str], str] | None:
    """The fleet's own store in a container deployment: its command (python3 of the engine
    image, listening on every address) and the URL engines reach it at through `host`."""
    argv = shared_store_launch(spec, python="python3", host="0.0.0.0")
    if argv is None or spec.remote is None:
        return None
    return argv, spec.remote.url_at(host)
