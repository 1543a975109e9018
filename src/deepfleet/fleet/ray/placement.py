"""A replica's layout as a Ray placement group.

A replica holds tp x pp x dp devices: `vllm serve --data-parallel-size N` (DP attention)
starts N engine cores on the one host, rank r on devices r*tp*pp.. of what the server sees, so
its DP ranks need devices beside the TP groups, all on its node. deepfleet starts no multi-node
DP (no --data-parallel-size-local / --headless engines; `deepfleet render` refuses it too), so a
DP replica that does not fit one node is refused here, not handed a placement it cannot use.

- A replica inside one node gets one bundle holding all its devices (STRICT_PACK). Its
  supervisor actor takes that whole bundle, so Ray sets CUDA_VISIBLE_DEVICES (or the NPU and
  CPU equivalents) for the actor, and the engine it starts inherits exactly those devices.
- A replica spanning nodes gets one bundle per device, because vLLM's Ray executor puts one
  worker per bundle and refuses bundles of more than one device. PACK fills a node before the
  next, so with whole free nodes each TP group (`tp` consecutive bundles, vLLM's rank order)
  lands inside one node and the PP stages spread over nodes; PACK is best effort, so
  `split_tp_groups` checks the result. The supervisor actor then takes nothing and sits in
  bundle 0, where vLLM's driver must run (it requires a bundle on its own node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepfleet.engines.base import ReplicaPlan
from deepfleet.engines.registry import get_adapter, known_engines
from deepfleet.kvcache.endpoints import data_parallel_ranks as data_parallel_size

DEVICE_KEYS = {"nvidia": "GPU", "huawei": "NPU", "cpu": "CPU"}
"""Ray's resource name for each device vendor of the hardware catalog."""
CPU_SPAN_REFUSAL = (
    "vLLM's CPU build has no Ray executor, so a replica cannot span nodes on it (vLLM "
    "0.32 CPU: 'current platform cpu does not support ray.'); keep tensor_parallel_size x "
    "pipeline_parallel_size within devices_per_node"
)


class PlacementError(ValueError):
    """The layout cannot become a placement group; the message says why and what to change."""


@dataclass(frozen=True)
class Placement:
    bundles: tuple[dict[str, float], ...]
    strategy: str
    tp: int
    actor_resources: dict[str, float] = field(default_factory=dict)
    """What the supervisor actor takes from bundle 0 (Ray's names: CPU, GPU, or custom)."""

    @property
    def spans_nodes(self) -> bool:
        return len(self.bundles) > 1

    def describe(self) -> str:
        """`16 x {GPU: 1} PACK`, for status lines while the group waits for resources."""
        first = ", ".join(f"{k}: {v:g}" for k, v in self.bundles[0].items())
        return f"{len(self.bundles)} x {{{first}}} {self.strategy}"


def _engine_int(plan: ReplicaPlan, key: str) -> int | None:
    """An integer engine flag as the engine gets it (the config's engine_args, in either
    spelling, over the plan's defaults)."""
    args = {k.replace("-", "_"): v for a in (plan.engine_defaults, plan.model.engine_args)
            for k, v in a.items()}  # fmt: skip
    value = args.get(key)
    return int(value) if value is not None else None


def data_parallel_ranks(plan: ReplicaPlan) -> int:
    """The replica's data-parallel (DP attention) ranks: vLLM's --data-parallel-size."""
    return data_parallel_size({**plan.engine_defaults, **plan.model.engine_args}) or 1


def layout_text(plan: ReplicaPlan) -> str:
    """The replica's layout for status lines: `tp 8 x pp 2`, `tp 1 x pp 1 x dp 8`."""
    dp = data_parallel_ranks(plan)
    return f"tp {plan.tp} x pp {plan.pp}" + (f" x dp {dp}" if dp > 1 else "")


def _check_dp_on_one_node(plan: ReplicaPlan, dp: int, devices_per_node: int) -> None:
    devices = plan.tp * plan.pp * dp
    local = _engine_int(plan, "data_parallel_size_local")
    if devices > devices_per_node or (local is not None and local < dp):
        raise PlacementError(
            f"{plan.replica_id}: data-parallel attention over {dp} ranks x tp {plan.tp} x pp "
            f"{plan.pp} = {devices} devices must stay on one node of {devices_per_node} "
            f"(deepfleet starts no multi-node DP); lower data_parallel_size, or use a tp x pp "
            f"layout across nodes"
        )


def placement_for(
    plan: ReplicaPlan, device_key: str, devices_per_node: int, cpus_per_replica: float = 1.0
) -> Placement:
    """Bundles and strategy for one replica of `plan` (tp x pp x dp devices).

    On CPUs (vLLM's CPU build) a replica is one process group on one node holding
    `cpus_per_replica` CPUs. Raises PlacementError when the layout cannot be placed.
    """
    if device_key == "CPU":
        if plan.tp * plan.pp > devices_per_node:
            raise PlacementError(f"{plan.replica_id}: {CPU_SPAN_REFUSAL}")
        bundle = {"CPU": float(cpus_per_replica)}
        return Placement((bundle,), "STRICT_PACK", plan.tp, dict(bundle))
    dp = data_parallel_ranks(plan)
    if dp > 1:
        _check_dp_on_one_node(plan, dp, devices_per_node)
    devices = plan.tp * plan.pp * dp
    if devices <= devices_per_node:
        bundle = {device_key: float(devices)}
        return Placement((bundle,), "STRICT_PACK", plan.tp, dict(bundle))
    if get_adapter(plan.model.engine).multi_node != "ray":
        ray_engines = [e for e in known_engines() if get_adapter(e).multi_node == "ray"]
        raise PlacementError(
            f"{plan.replica_id}: {devices} devices span nodes, and engine {plan.model.engine!r} "
            f"has no Ray executor ({', '.join(ray_engines)} do)"
        )
    if plan.tp > devices_per_node or devices_per_node % plan.tp:
        raise PlacementError(
            f"{plan.replica_id}: tensor_parallel_size {plan.tp} must divide devices_per_node "
            f"{devices_per_node}, so that every TP group stays inside one node"
        )
    return Placement(tuple({device_key: 1.0} for _ in range(devices)), "PACK", plan.tp)


def split_tp_groups(bundle_nodes: Mapping[int, str], tp: int) -> list[int]:
    """Indexes of the TP groups (tp consecutive bundles) whose bundles sit on several nodes."""
    count = len(bundle_nodes)
    return [
        g
        for g in range(count // tp)
        if len({bundle_nodes[i] for i in range(g * tp, (g + 1) * tp)}) > 1
    ]


def nodes_in_order(bundle_nodes: Mapping[int, str]) -> list[str]:
    """The distinct nodes of a placement group, in bundle order (the first hosts the engine)."""
    return list(dict.fromkeys(bundle_nodes[i] for i in sorted(bundle_nodes)))


def actor_options(placement: Placement) -> dict[str, Any]:
    """Ray options for the supervisor actor: bundle 0's resources when it owns the bundle."""
    res = dict(placement.actor_resources)
    opts: dict[str, Any] = {"num_cpus": res.pop("CPU", 0), "num_gpus": res.pop("GPU", 0)}
    if res:
        opts["resources"] = res
    return opts
