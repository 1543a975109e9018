"""The prefill and decode pools of a disaggregated model (fleet.yaml `disaggregation:`).

Each pool is sized as an aggregated model of its own would be: its replicas and layout (the
pool's tensor_parallel_size, data_parallel_size, expert_parallel) are the config's, the rest
(max_model_len, max_num_seqs, memory) the planner's (`pool_config`). Its replicas are named
MODEL-prefill-N and MODEL-decode-N, and carry their role into the fleet state, where the
gateway's two-phase path (deepfleet.gateway.pd) picks them by it.

A replica gets its role's engine arguments (`role_defaults`: the KV connector's
`--kv-transfer-config`, DeepEP kernels per phase; on vllm-ascend the Mooncake connector's
kv_port, engine_id and pool layouts, `ascend_mooncake`), and in local mode what depends on the
host: the shared-storage connector's folder in the state dir (`with_local_storage`; every
engine of the fleet sees it) and, for NIXL, a side-channel port of its own
(`nixl_env`: vLLM listens on VLLM_NIXL_SIDE_CHANNEL_PORT + the rank's data-parallel index, so
two engines on one host must not share the default 5600).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deepfleet.config.disagg import DisaggregationSpec, PoolSpec, connector_for
from deepfleet.config.schema import FleetConfig, ModelSpec, ParallelSpec
from deepfleet.engines.registry import get_adapter
from deepfleet.engines.vllm import pd_role_args
from deepfleet.fleet.ports import free_port, port_in_use

ROLES = ("prefill", "decode")
ASCEND_MOONCAKE = "MooncakeConnectorV1"
"""The name vllm-ascend registers its own Mooncake connector under (vLLM's `MooncakeConnector`
is the CUDA one)."""
ASCEND_KV_PORT = 36000
"""First kv_port of a model's engines on vllm-ascend: above the [20000, 36000) Mooncake's
AscendDirectTransport may take on a 16-NPU node (vllm-ascend's guide: >= 28000 with 8 NPUs,
>= 36000 with 16)."""
KV_DIR = "kv-transfer"
NIXL_PORT_ENV = "VLLM_NIXL_SIDE_CHANNEL_PORT"
NIXL_HOST_ENV = "VLLM_NIXL_SIDE_CHANNEL_HOST"


def pools(model: ModelSpec) -> list[tuple[str, PoolSpec]]:
    """(role, pool) of a disaggregated model, prefill first; empty for an aggregated one."""
    spec = model.disaggregation
    return [] if spec is None else [(role, getattr(spec, role)) for role in ROLES]


def replicas_of(model: ModelSpec) -> int:
    """Engines the model starts: both pools', or the model's own count."""
    both = sum(pool.replicas for _, pool in pools(model))
    return both or model.fixed_replicas or 1


def pool_config(cfg: FleetConfig, index: int, pool: PoolSpec) -> FleetConfig:
    """`cfg` with models[index] as an aggregated model shaped like `pool` (for the planner)."""
    model = cfg.models[index]
    layout = ParallelSpec(
        tp=pool.tensor_parallel_size, dp=pool.data_parallel_size, ep=pool.expert_parallel
    )
    shaped = model.model_copy(
        update={"parallel": layout, "replicas": pool.replicas, "disaggregation": None}
    )
    models = [*cfg.models[:index], shaped, *cfg.models[index + 1 :]]
    return cfg.model_copy(update={"models": models})


def role_defaults(
    model: ModelSpec, role: str, expert_parallel: bool, engine: int = 0
) -> dict[str, Any]:
    """The engine_args a replica of `role` gets unless the model's own engine_args say
    otherwise (engines.vllm.pd_role_args); `engine`: the replica's number among the model's
    engines, prefill first (vllm-ascend's Mooncake engine_id and kv_port)."""
    spec = model.disaggregation
    assert spec is not None
    storage = spec.shared_storage_path
    connector = connector_for(model.engine, spec)
    args = pd_role_args(
        role,
        connector,
        vendor=get_adapter(model.engine).vendor,
        expert_parallel=expert_parallel,
        storage=str(storage) if storage else None,
    )
    if model.engine == "vllm-ascend" and connector == "mooncake":
        args["kv_transfer_config"] |= ascend_mooncake(spec, engine)
    return args


def ascend_mooncake(spec: DisaggregationSpec, engine: int) -> dict[str, Any]:
    """What vllm-ascend's Mooncake connector needs beside the role (its multi-node P/D guide):
    its registered name, a kv_port and engine_id of the engine's own, and both pools' layouts
    (dp_size, tp_size), from which a decode rank finds the prefill ranks holding its blocks.

    An engine listens on kv_port .. kv_port + its ranks, so each engine of the model starts
    where the previous one's range ends; the base is above the ports Mooncake's
    AscendDirectTransport takes at random ([20000, 20000 + 1000 x NPUs per node)).
    """
    ranks = [spec.prefill.devices] * spec.prefill.replicas
    ranks += [spec.decode.devices] * spec.decode.replicas
    return {
        "kv_connector": ASCEND_MOONCAKE,
        "kv_port": ASCEND_KV_PORT + sum(ranks[:engine]),
        "engine_id": str(engine),
        "kv_connector_extra_config": {
            "use_ascend_direct": True,
            **{
                role: {"dp_size": pool.data_parallel_size, "tp_size": pool.tensor_parallel_size}
                for role, pool in (("prefill", spec.prefill), ("decode", spec.decode))
            },
        },
    }


def storage_dir(state_dir: Path, model: str) -> Path:
    """The shared-storage folder of `model` in a fleet's state dir."""
    return state_dir / KV_DIR / re.sub(r"[^A-Za-z0-9._-]", "_", model)


def with_local_storage(cfg: FleetConfig, state_dir: Path) -> FleetConfig:
    """`cfg` where every shared-storage model without a folder has one in `state_dir`."""
    models = []
    for m in cfg.models:
        spec = m.disaggregation
        if (
            spec is not None
            and spec.shared_storage_path is None
            and m.engine in ("vllm", "vllm-cpu")
            and connector_for(m.engine, spec) == "shared-storage"
        ):
            path = storage_dir(state_dir, m.name)
            spec = spec.model_copy(update={"shared_storage_path": path})
            m = m.model_copy(update={"disaggregation": spec})
        models.append(m)
    return cfg.model_copy(update={"models": models})


def shared_folders(cfg: FleetConfig) -> list[Path]:
    """The shared-storage folders the config's models use (to create before engines start)."""
    return [
        m.disaggregation.shared_storage_path
        for m in cfg.models
        if m.disaggregation is not None and m.disaggregation.shared_storage_path is not None
    ]


def nixl_env(model: ModelSpec, host: str, ranks: int, taken: set[int]) -> dict[str, str]:
    """A NIXL replica's side channel on this host: `ranks` consecutive free ports (one per
    data-parallel rank), added to `taken`; empty for any other connector."""
    spec = model.disaggregation
    if spec is None or connector_for(model.engine, spec) != "nixl":
        return {}
    for _ in range(100):
        base = free_port(exclude=taken)
        block = set(range(base, base + ranks))
        if not block & taken and not any(port_in_use("127.0.0.1", p) for p in block - {base}):
            break
    # else: the last one; a rank whose port is taken fails at start and is restarted
    taken |= block
    return {NIXL_PORT_ENV: str(base), NIXL_HOST_ENV: host}
