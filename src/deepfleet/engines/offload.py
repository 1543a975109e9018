"""KV offloading and sharing (fleet.yaml `kv_cache:`) for a fleet's replicas.

`offload_plans` asks each replica's engine adapter for its offload arguments
(`EngineAdapter.kv_offload`) and returns new plans carrying them as defaults; the model's own
`engine_args` and `engine_env` still win. With a remote tier without `url`, the fleet runs its
own shared store: `shared_store_launch` and `container_store` give its command.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import replace

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.engines.registry import get_adapter, known_engines


def offloading_engines(spec: KvCacheSpec) -> list[str]:
    """The engines that can offload as `spec` asks."""
    return [e for e in known_engines() if get_adapter(e).kv_offload(spec) is not None]


def offload_plans(
    plans: Sequence[ReplicaPlan], spec: KvCacheSpec, remote_url: str | None = None
) -> tuple[list[ReplicaPlan], list[str]]:
    """Every plan with its engine's offload arguments, and a note per model that gets none.

    The arguments become the plan's `engine_defaults` and `env_defaults`; the models are left
    as configured. `remote_url`: where the engines reach the shared store when that differs
    from the config's address.
    """
    if spec.offload == "none":
        return list(plans), []
    out: list[ReplicaPlan] = []
    skipped: dict[str, str] = {}
    for plan in plans:
        offload = get_adapter(plan.model.engine).kv_offload(spec, remote_url)
        if offload is None:
            skipped[plan.model.name] = plan.model.engine
            out.append(plan)
            continue
        out.append(
            replace(
                plan,
                engine_defaults={**plan.engine_defaults, **offload.engine_args},
                env_defaults={**plan.env_defaults, **offload.env},
            )
        )
    able = ", ".join(offloading_engines(spec))
    notes = [
        f"kv_cache.offload: {spec.offload!r} needs an engine that can offload ({able}); model "
        f"{name!r} runs on {engine}, so its replicas start without KV offloading (set "
        "kv_cache.offload: none to silence this)"
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


def with_password(url: str, password: str) -> str:
    """redis://host:port -> redis://:PASSWORD@host:port (Redis AUTH with the default user)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://:{password}@{rest}"


def store_url(spec: KvCacheSpec, password: Callable[[], str]) -> str | None:
    """Where the engines reach the fleet's own Redis store, with its password (asked of
    `password` only then); None when the fleet runs no Redis store of its own (the config's
    address is used as is)."""
    remote = spec.remote
    if shared_store_launch(spec) is None or remote is None or remote.kind != "redis":
        return None
    return with_password(remote.address, password())


def container_store(spec: KvCacheSpec, host: str) -> tuple[list[str], str] | None:
    """The fleet's own store in a container deployment: its command (python3 of the engine
    image, listening on every address) and the URL engines reach it at through `host`."""
    argv = shared_store_launch(spec, python="python3", host="0.0.0.0")
    if argv is None or spec.remote is None:
        return None
    return argv, spec.remote.url_at(host)
