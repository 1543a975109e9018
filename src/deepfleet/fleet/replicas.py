"""From a fleet config to concrete replica plans: the planner fills what the config leaves out,
and the local launcher adds what depends on this machine (ports, CPU cores per replica).

`size_model` asks the planner for one model entry and keeps every choice the config made:
tensor/pipeline parallel size, replicas (`auto`), max_model_len, max_num_seqs and
gpu_memory_utilization are filled only where the config is silent, and a config that cannot
fit is refused with the reason and the nearest alternatives that would.
"""

from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

from deepfleet.catalog import bundled
from deepfleet.catalog.models import ModelFactsError
from deepfleet.config.schema import FleetConfig, ModelSpec, ParallelSpec
from deepfleet.engines.base import VISIBLE_DEVICES_ENV, ReplicaPlan
from deepfleet.engines.registry import get_adapter
from deepfleet.fleet.cpu_share import cpu_affinity, cpu_binding, cpu_kv_gib, cpu_slots
from deepfleet.fleet.pools import nixl_env, pool_config, pools, replicas_of, role_defaults
from deepfleet.fleet.ports import free_port
from deepfleet.planner import Plan, plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for

GIB = 1024**3
# vllm-cpu: KV space per replica is a share of free memory, within these bounds (GiB).
KV_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"


# The device nodes that tell how many accelerators of each vendor this machine has.
_DEVICE_NODE = {"nvidia": re.compile(r"nvidia(\d+)"), "ascend": re.compile(r"davinci(\d+)")}


def visible_devices(vendor: str, env: dict[str, str] | os._Environ[str] = os.environ,
                    dev: Path = Path("/dev")) -> list[str]:  # fmt: skip
    """The device ids an engine of `vendor` may use here: the visible-devices variable when set
    (the container or the user already chose), else one per device node (/dev/nvidia0 ...)."""
    chosen = env.get(VISIBLE_DEVICES_ENV[vendor])
    if chosen is not None:
        return [d.strip() for d in chosen.split(",") if d.strip()]
    try:
        names = [p.name for p in dev.iterdir()]
    except OSError:
        return []
    ids = [int(m.group(1)) for n in names if (m := _DEVICE_NODE[vendor].fullmatch(n))]
    return [str(i) for i in sorted(ids)]


@dataclass(frozen=True)
class MachineFacts:
    cores: list[int]
    available_bytes: int
    # Accelerator ids per vendor ("nvidia", "ascend"); none known: engines see every device.
    devices: dict[str, list[str]] | None = None

    @classmethod
    def probe(cls) -> MachineFacts:
        return cls(
            sorted(os.sched_getaffinity(0)),
            psutil.virtual_memory().available,
            {vendor: visible_devices(vendor) for vendor in VISIBLE_DEVICES_ENV},
        )


def on_cpu(model: ModelSpec) -> bool:
    """The model runs on CPUs (its replicas share this host's memory and cores)."""
    return get_adapter(model.engine).vendor == "cpu"


class InfeasibleConfig(Exception):
    """A model entry the planner says cannot run; `lines` say why and what would."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Sizing:
    """One model's replica shape: the config's choices, and the planner's where it had none."""

    replicas: int
    tp: int
    pp: int
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    cpu_kv_cache_gib: int | None = None
    layout: str = ""
    # Flags a planned layout needs beyond tp/pp (data-parallel attention, expert parallel).
    extra_args: tuple[tuple[str, int | float | bool], ...] = ()
    # A disaggregated model: `prefill` or `decode` for one pool's sizing; the model's sizing
    # holds its pools, prefill first, and `replicas` counts both (deepfleet.fleet.pools).
    role: str = ""
    pools: tuple[Sizing, ...] = ()

    def pool_of(self, replica: int) -> tuple[Sizing, int]:
        """The sizing replica number `replica` of the model gets, and its number in there."""
        for pool in self.pools:
            if replica < pool.replicas:
                return pool, replica
            replica -= pool.replicas
        return self, replica


def replica_count(model: ModelSpec) -> int:
    return replicas_of(model)


def parallel_args(dp: int, ep: bool) -> tuple[tuple[str, int | float | bool], ...]:
    """Engine flags for data-parallel attention ranks and expert parallelism."""
    extra: dict[str, int | float | bool] = {}
    if dp > 1:
        extra["data_parallel_size"] = dp
    if ep:
        extra["enable_expert_parallel"] = True
    return tuple(extra.items())


def _config_only(model: ModelSpec) -> Sizing:
    par = model.parallel if isinstance(model.parallel, ParallelSpec) else ParallelSpec()
    return Sizing(
        replica_count(model),
        par.tp,
        par.pp,
        model.max_model_len,
        extra_args=parallel_args(par.dp, par.ep),
    )


def infeasible_lines(index: int, model: ModelSpec, result: Plan) -> list[str]:
    """Why nothing fits (the layout closest to fitting), then the nearest changes that do."""
    c = result.cluster
    why = result.layouts[0].reason if result.layouts else "no layout to judge"
    lines = [
        f"models[{index}] {model.name}: does not fit on {c.nodes} node(s) x "
        f"{c.devices_per_node} {c.device.name} ({result.weight_format.name} weights): {why}"
    ]
    if result.alternatives:
        lines.append("  nearest configurations that fit:")
        lines += [
            f"  - {a.change}: {a.layout.label}, max_model_len {a.layout.max_model_len:,}"
            for a in result.alternatives
        ]
    else:
        lines.append("  nothing close fits; see `deepfleet plan -f FILE --all`")
    return lines


def size_model(
    cfg: FleetConfig,
    index: int,
    *,
    host_memory_bytes: int | None = None,
    cpu_kv_space_gib: int | None = None,
) -> Sizing:
    """Plan model `index` of the config on its cluster and fill what the config leaves out.

    On vLLM's CPU build the planner judges one replica against `host_memory_bytes` (its share
    of the host) with `cpu_kv_space_gib` of KV cache unless the model's engine_env sets
    VLLM_CPU_KVCACHE_SPACE. A model whose facts are unknown (a hub id outside the catalog) is
    started as configured. Raises InfeasibleConfig when the planner finds no layout.
    """
    model = cfg.models[index]
    try:
        facts = model_facts_for(model)
    except ModelFactsError:
        return _config_only(model)
    cluster = cluster_for(cfg)
    request = request_for(model)
    cpu = cluster.device.vendor == "cpu"
    if cpu and host_memory_bytes is not None:
        cluster = replace(cluster, device=replace(cluster.device, memory_bytes=host_memory_bytes))
    if cpu and cpu_kv_space_gib is not None and KV_SPACE_ENV not in model.engine_env:
        request = replace(request, cpu_kv_space_gib=cpu_kv_space_gib)
    result = plan(facts, cluster, request)
    best = result.recommended
    if best is None:
        raise InfeasibleConfig(infeasible_lines(index, model, result))
    args = {k.replace("-", "_") for k in model.engine_args}
    fixed = model.parallel if isinstance(model.parallel, ParallelSpec) else None
    # Data-parallel attention ranks and expert parallelism: the config's when it fixes the
    # layout, else the planner's.
    dp, ep = (fixed.dp, fixed.ep) if fixed else (best.attn_dp, best.ep)
    return Sizing(
        replicas=model.fixed_replicas or best.dp,
        tp=fixed.tp if fixed else best.tp,
        pp=fixed.pp if fixed else best.pp,
        max_model_len=model.max_model_len or best.max_model_len,
        max_num_seqs=None if "max_num_seqs" in args else best.max_num_seqs,
        gpu_memory_utilization=None
        if "gpu_memory_utilization" in args
        else best.gpu_memory_utilization,
        cpu_kv_cache_gib=best.kv_cache_space_gib if KV_SPACE_ENV not in model.engine_env else None,
        layout=best.label,
        extra_args=parallel_args(dp, ep),
    )


def size_pools(cfg: FleetConfig, index: int, **host: int | None) -> Sizing:
    """A disaggregated model's sizing: each pool planned as a model of its own shape; a pool
    that does not fit is refused under its field."""
    sized: list[Sizing] = []
    lines: list[str] = []
    for role, pool in pools(cfg.models[index]):
        try:
            sized.append(
                replace(size_model(pool_config(cfg, index, pool), index, **host), role=role)
            )
        except InfeasibleConfig as exc:
            lines += [f"models[{index}].disaggregation.{role}:", *exc.lines]
    if lines:
        raise InfeasibleConfig(lines)
    return replace(sized[0], replicas=sum(p.replicas for p in sized), role="", pools=tuple(sized))


def size_fleet(
    cfg: FleetConfig, host_memory_bytes: int | None = None, cpu_replicas: int = 1
) -> list[Sizing]:
    """Every model's sizing; one InfeasibleConfig carries the lines of all that do not fit.

    `host_memory_bytes` is one host's free memory, shared by `cpu_replicas` CPU replicas.
    """
    share = host_memory_bytes // max(cpu_replicas, 1) if host_memory_bytes else None
    kv = cpu_kv_gib(host_memory_bytes, cpu_replicas) if host_memory_bytes else None
    out: list[Sizing] = []
    problems: list[str] = []
    for i in range(len(cfg.models)):
        size = size_pools if cfg.models[i].disaggregation is not None else size_model
        try:
            out.append(size(cfg, i, host_memory_bytes=share, cpu_kv_space_gib=kv))
        except InfeasibleConfig as exc:
            problems += exc.lines
            if on_cpu(cfg.models[i]) and cpu_replicas > 1 and host_memory_bytes:
                problems.append(
                    f"  - fewer CPU replicas: {cpu_replicas} share the "
                    f"{host_memory_bytes / GIB:.1f} GiB free on a host"
                )
    if problems:
        raise InfeasibleConfig(problems)
    return out


def replica_plan(
    model: ModelSpec, sizing: Sizing, replica: int, model_path: str, python: str
) -> ReplicaPlan:
    """Replica number `replica` of `model` shaped by `sizing` (of its pool, for a
    disaggregated model, with its role's arguments); host and ports are the launcher's."""
    defaults: dict[str, object] = dict(bundled.ENGINE_DEFAULTS) if model.is_bundled else {}
    sizing, number = sizing.pool_of(replica)
    defaults.update(sizing.extra_args)
    if sizing.role:
        ep = bool(dict(sizing.extra_args).get("enable_expert_parallel"))
        defaults.update(role_defaults(model, sizing.role, ep, engine=replica))
    return ReplicaPlan(
        model=model,
        replica_id=f"{model.name}-{sizing.role}-{number}"
        if sizing.role
        else f"{model.name}-{replica}",
        model_path=model_path,
        host="127.0.0.1",
        port=0,
        tp=sizing.tp,
        pp=sizing.pp,
        max_model_len=sizing.max_model_len,
        max_num_seqs=sizing.max_num_seqs,
        gpu_memory_utilization=sizing.gpu_memory_utilization,
        cpu_kv_cache_gib=sizing.cpu_kv_cache_gib if on_cpu(model) else None,
        python=python,
        engine_defaults=defaults,
        role=sizing.role,
    )


def plan_local(
    cfg: FleetConfig,
    model_paths: dict[str, str],
    machine: MachineFacts,
    python: str = sys.executable,
) -> list[ReplicaPlan]:
    """One ReplicaPlan per replica of every model, sized by the planner, with its own ports."""
    cpu_configured = sum(cpu_slots(m, replica_count(m)) for m in cfg.models if on_cpu(m))
    sizings = size_fleet(cfg, machine.available_bytes, cpu_configured)
    plans: list[ReplicaPlan] = []
    taken: set[int] = {cfg.gateway.port}
    slots = [
        cpu_slots(m, s.replicas) if on_cpu(m) else 0
        for m, s in zip(cfg.models, sizings, strict=True)
    ]
    cpu_total = sum(slots)
    devices = DevicePool(machine.devices or {})
    for index, (model, sizing) in enumerate(zip(cfg.models, sizings, strict=True)):
        cpu = on_cpu(model)
        first_slot = sum(slots[:index])
        for i in range(sizing.replicas):
            port = free_port(exclude=taken)
            events = free_port(exclude=taken | {port})
            taken |= {port, events}
            base = replica_plan(model, sizing, i, model_paths[model.name], python)
            pool = sizing.pool_of(i)[0]
            ranks = int(dict(pool.extra_args).get("data_parallel_size", 1))
            plans.append(
                replace(
                    base,
                    port=port,
                    kv_events_port=events,
                    cpu_threads=(
                        cpu_binding(machine.cores, first_slot + i, cpu_total) if cpu else None
                    ),
                    cpu_affinity=(
                        cpu_affinity(machine.cores, first_slot + i, cpu_total) if cpu else None
                    ),
                    devices=devices.take(index, model, pool),
                    env_defaults={**base.env_defaults, **nixl_env(model, base.host, ranks, taken)},
                )
            )
    problems = devices.problems()
    if problems:
        raise InfeasibleConfig(problems)
    return plans


def devices_per_replica(model: ModelSpec, sizing: Sizing) -> int:
    """TP x PP x data-parallel ranks, as the engine will see them (engine_args win)."""
    dp = dict(sizing.extra_args).get("data_parallel_size", 1)
    sizes = {"tensor_parallel_size": sizing.tp, "pipeline_parallel_size": sizing.pp,
             "data_parallel_size": dp}  # fmt: skip
    for key, value in model.engine_args.items():
        if key.replace("-", "_") in sizes and isinstance(value, int):
            sizes[key.replace("-", "_")] = value
    return int(math.prod(sizes.values()))


class DevicePool:
    """Hands each accelerator replica devices of its own, in order (GPU 0-1 to the first TP 2
    replica, 2-3 to the next), so replicas on one machine do not all land on device 0.

    A model whose `engine_env` sets the visible-devices variable keeps its own choice; with no
    device known for a vendor (none found, or no vendor) the engine sees every device.
    """

    def __init__(self, devices: dict[str, list[str]]) -> None:
        self._free = {vendor: list(ids) for vendor, ids in devices.items()}
        self._total = {vendor: len(ids) for vendor, ids in devices.items()}
        # vendor -> model index -> (model name, devices its replicas asked for)
        self._wanted: dict[str, dict[int, tuple[str, int]]] = {}

    def take(self, index: int, model: ModelSpec, sizing: Sizing) -> tuple[str, ...]:
        adapter = get_adapter(model.engine)
        vendor, var = adapter.vendor, adapter.visible_devices_env
        if var is None or var in model.engine_env:
            return ()
        if not self._total.get(vendor):
            return ()
        need = devices_per_replica(model, sizing)
        wanted = self._wanted.setdefault(vendor, {})
        wanted[index] = (model.name, wanted.get(index, (model.name, 0))[1] + need)
        free = self._free[vendor]
        if len(free) < need:
            return ()
        mine, self._free[vendor] = free[:need], free[need:]
        return tuple(mine)

    def problems(self) -> list[str]:
        """Per vendor whose replicas asked for more devices than the machine has: why, and
        the fields to change; empty when every replica got its own."""
        lines: list[str] = []
        for vendor, wanted in self._wanted.items():
            total = sum(n for _, n in wanted.values())
            if total <= self._total[vendor]:
                continue
            var = VISIBLE_DEVICES_ENV[vendor]
            lines.append(
                f"the models need {total} {vendor} devices on this machine and it has "
                f"{self._total[vendor]} ({var} or /dev): "
                + ", ".join(f"models[{i}] {name} {n}" for i, (name, n) in wanted.items())
            )
            lines.append(
                "  - lower `replicas` or `parallel` of a model, or pin its devices with "
                f"`engine_env: {{{var}: ...}}`"
            )
        return lines
