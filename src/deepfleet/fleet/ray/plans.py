"""Replica plans for a Ray cluster: sized by the planner for the smallest alive node, each
with its placement. Host and port stay unset: the supervisor actor picks them on the node
the replica lands on. Pure (no Ray), so the reference plan is tested without a cluster."""

from __future__ import annotations

from dataclasses import replace

from deepfleet.catalog.hardware import get_device
from deepfleet.config.schema import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.ray.placement import DEVICE_KEYS, Placement, PlacementError, placement_for
from deepfleet.fleet.replicas import InfeasibleConfig, replica_plan, size_fleet
from deepfleet.fleet.state import NodeStatus


def device_key(cfg: FleetConfig) -> str:
    return DEVICE_KEYS[get_device(cfg.cluster.device).vendor]


def plan_cluster(
    cfg: FleetConfig, model_paths: dict[str, str], nodes: list[NodeStatus]
) -> list[tuple[ReplicaPlan, Placement]]:
    """Every replica with its placement; InfeasibleConfig carries every reason a model does
    not fit or cannot be placed. Replicas spanning nodes get vLLM's Ray executor."""
    alive = [n for n in nodes if n.alive]
    per_node = cfg.cluster.devices_per_node
    memory = min((n.memory_bytes for n in alive), default=0) or None
    cpus = min((n.devices.get("CPU", 1.0) for n in alive), default=1.0)
    cpus_per_replica = max(1, int(cpus // per_node))
    key = device_key(cfg)
    out: list[tuple[ReplicaPlan, Placement]] = []
    problems: list[str] = []
    for model, sizing in zip(cfg.models, size_fleet(cfg, memory, per_node), strict=True):
        for i in range(sizing.replicas):
            base = replica_plan(model, sizing, i, model_paths[model.name], "python3")
            try:
                where = placement_for(base, key, per_node, cpus_per_replica)
            except PlacementError as exc:
                problems.append(str(exc))
                continue
            backend = "ray" if where.spans_nodes else None
            plan = replace(base, host="", port=0, distributed_executor_backend=backend)
            out.append((plan, where))
    if problems:
        raise InfeasibleConfig(problems)
    return out
