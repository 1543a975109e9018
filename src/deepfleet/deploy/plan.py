"""What every renderer needs from the planner: each model's layout and replica count, the
nodes they take, engine launch specs from the engine adapters, and how long loading may take.

Renderers never choose a layout or a flag themselves; they place what `deploy_plan` returns.
A disaggregated model deploys as two entries, its prefill and its decode pool, each planned
as a model of the pool's shape, whose replicas carry their role's engine arguments
(deepfleet.fleet.pools).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any

from deepfleet.catalog.hardware import Device, GiB, UnknownDeviceError
from deepfleet.catalog.models import ModelFacts, ModelFactsError, load_model_facts
from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.schema import FleetConfig, ModelSpec
from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.engines.offload import offload_plans
from deepfleet.engines.registry import get_adapter
from deepfleet.fleet.pools import pool_config, pools, role_defaults
from deepfleet.planner import Layout, plan
from deepfleet.planner.fleet import cluster_for, model_facts_for, request_for

LOAD_OVERHEAD_S = 600
"""Besides reading weights: process start, collectives setup, CUDA graph capture or graph
compilation, KV cache allocation (vLLM on 8 GPUs: 2-6 minutes)."""
LOAD_SAFETY = 2.0
"""The startup budget is this many times the estimate: a probe that gives up too early
restarts the load from zero."""


class DeployError(Exception):
    """The config cannot be rendered for a target; one line per problem, naming the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ModelDeployment:
    """One model entry as deployed: the planner's layout and how many replicas."""

    index: int
    spec: ModelSpec
    layout: Layout
    replicas: int
    weight_format: str
    weight_bytes: int
    devices_per_node: int
    note: str | None = None
    kv_cache: KvCacheSpec = field(default_factory=KvCacheSpec)
    role: str = ""  # `prefill` or `decode`: one pool of a disaggregated model

    @property
    def devices_per_replica(self) -> int:
        return self.layout.devices_per_replica

    @property
    def nodes_per_replica(self) -> int:
        return max(1, math.ceil(self.devices_per_replica / self.devices_per_node))

    @property
    def multi_node(self) -> bool:
        return self.devices_per_replica > self.devices_per_node

    def engine_defaults(self, ray: bool = False, replica: int = 0) -> dict[str, Any]:
        """Flags the layout sets beyond the ReplicaPlan fields (the config's engine_args win).
        `ray`: place the workers through Ray even when the replica fits in one node (engines
        started from a Ray head, so Ray accounts for every device); `replica`: its number in
        its pool."""
        out: dict[str, Any] = {"max_num_batched_tokens": self.layout.max_num_batched_tokens}
        if self.layout.attn_dp > 1:
            out |= {"data_parallel_size": self.layout.attn_dp, "enable_expert_parallel": True}
        if self.multi_node or ray:
            out["distributed_executor_backend"] = "ray"
        if self.role:
            out |= self.role_args(replica)
        return out

    def role_args(self, replica: int = 0) -> dict[str, Any]:
        """A pool's flags: expert parallelism as the pool sets it, and its KV connector
        (for replica `replica` of the pool: engines are numbered prefill first)."""
        both = dict(pools(self.spec))
        pool = both[self.role]
        engine = replica + (both["prefill"].replicas if self.role == "decode" else 0)
        out: dict[str, Any] = {"enable_expert_parallel": True} if pool.expert_parallel else {}
        return out | role_defaults(self.spec, self.role, pool.expert_parallel, engine)

    @property
    def name(self) -> str:
        """The model's name, and its pool's role for a disaggregated model (object names)."""
        return f"{self.spec.name}-{self.role}" if self.role else self.spec.name

    def replica_plan(self, replica: int, host: str, port: int, ray: bool = False) -> ReplicaPlan:
        """The plan of replica `replica` serving on host:port inside an engine container."""
        return ReplicaPlan(
            model=self.spec,
            replica_id=f"{self.name}-{replica}",
            model_path=self.spec.source,
            host=host,
            port=port,
            tp=self.layout.tp,
            pp=self.layout.pp,
            max_model_len=self.layout.max_model_len,
            max_num_seqs=self.layout.max_num_seqs,
            gpu_memory_utilization=self.layout.gpu_memory_utilization,
            engine_defaults=self.engine_defaults(ray, replica),
            role=self.role,
        )

    def launch(
        self, replica: int, host: str, port: int, ray: bool = False, kv_store: str | None = None
    ) -> LaunchSpec:
        """The engine's command line and environment, with `kv_cache:`'s offload arguments;
        `kv_store`: the shared store's URL as this deployment's engines reach it."""
        plan = self.replica_plan(replica, host, port, ray)
        (plan,), _ = offload_plans([plan], self.kv_cache, kv_store)
        return get_adapter(self.spec.engine).launch_spec(plan)

    def load_budget_s(self, gib_per_s: float) -> int:
        """Seconds a replica may take to load: each node reads its stages' share of the
        weights at `gib_per_s`, plus LOAD_OVERHEAD_S, times LOAD_SAFETY."""
        per_node = self.weight_bytes / self.nodes_per_replica
        return math.ceil(LOAD_SAFETY * (per_node / (gib_per_s * GiB) + LOAD_OVERHEAD_S))


@dataclass(frozen=True)
class DeployPlan:
    cfg: FleetConfig
    device: Device
    models: tuple[ModelDeployment, ...]

    def distinct_models(self) -> list[ModelDeployment]:
        """One entry per model of the config (of a disaggregated model, its prefill pool)."""
        return list({m.spec.name: m for m in reversed(self.models)}.values())[::-1]

    @property
    def devices_used(self) -> int:
        return sum(m.replicas * m.devices_per_replica for m in self.models)

    @property
    def nodes_used(self) -> int:
        """Nodes the replicas occupy: replicas inside a node pack; larger ones take whole
        nodes (their TP fills a node)."""
        return max(1, math.ceil(self.devices_used / self.cfg.cluster.devices_per_node))

    def node_bounds(self) -> tuple[int, int]:
        """(fewest, most) GPU nodes the replicas can take as the autoscaler moves each model
        within its `replicas: {min, max}` (a fixed count is both), at most the cluster's."""
        per_node, cap = self.cfg.cluster.devices_per_node, self.cfg.cluster.nodes

        def nodes(bound: str) -> int:
            devices = sum(
                getattr(m.spec.replicas, bound, m.replicas) * m.devices_per_replica
                for m in self.models
            )
            return min(cap, math.ceil(devices / per_node))

        return nodes("min"), max(nodes("max"), self.nodes_used)

    def engines(self) -> list[tuple[ModelDeployment, int, int]]:
        """(model, replica index, port) of every replica, in config order; replica k of the
        fleet serves on deploy.engine_port + k."""
        pairs = [(m, r) for m in self.models for r in range(m.replicas)]
        base = self.cfg.deploy.engine_port
        return [(m, r, base + k) for k, (m, r) in enumerate(pairs)]

    def load_budget_s(self) -> int:
        return max(m.load_budget_s(self.cfg.deploy.kubernetes.load_gib_per_s) for m in self.models)


def _facts(spec: ModelSpec, path: str) -> tuple[ModelFacts, str | None]:
    """The model's facts; a folder that exists only on the cluster is planned with the
    catalog entry named like the folder or like the model (/models/deepseek-ai/DeepSeek-R1 or
    `name: deepseek-r1` -> DeepSeek-R1)."""
    try:
        return model_facts_for(spec), None
    except ModelFactsError as exc:
        if spec.is_local_path:
            for name in (PurePosixPath(spec.source).name, spec.name):
                try:
                    facts = load_model_facts(name)
                except ModelFactsError:
                    continue
                return facts, (
                    f"{spec.source} is not on this machine: planned with the catalog's {facts.name}"
                )
        raise DeployError([f"{path}.source: {exc}"]) from None


def _source_problems(cfg: FleetConfig, i: int, spec: ModelSpec) -> list[str]:
    path = f"models[{i}]"
    if spec.is_bundled:
        return [
            f"{path}.source: `bundled` is the local demo model; give a folder under "
            f"deploy.model_dir ({cfg.deploy.model_dir}) or a hub id"
        ]
    model_dir = PurePosixPath(cfg.deploy.model_dir)
    if spec.is_local_path and not PurePosixPath(spec.source).is_relative_to(model_dir):
        return [
            f"{path}.source: {spec.source} is outside deploy.model_dir {model_dir} (containers "
            "and pods see only that folder)"
        ]
    return []


def _deploy_models(cfg: FleetConfig, i: int, spec: ModelSpec) -> list[ModelDeployment]:
    """The model's deployment, or its two pools' (each planned as a model of its shape)."""
    if spec.disaggregation is None:
        return [_deploy_model(cfg, i, spec)]
    out = []
    for role, pool in pools(spec):
        shaped = pool_config(cfg, i, pool)
        try:
            deployed = _deploy_model(shaped, i, shaped.models[i])
        except DeployError as exc:
            raise DeployError(
                [f"models[{i}].disaggregation.{role}: {p}" for p in exc.problems]
            ) from None
        out.append(replace(deployed, spec=spec, role=role))
    return out


def _deploy_model(cfg: FleetConfig, i: int, spec: ModelSpec) -> ModelDeployment:
    facts, note = _facts(spec, f"models[{i}]")
    try:
        result = plan(facts, cluster_for(cfg), request_for(spec), alternatives=False)
    except (UnknownDeviceError, ValueError) as exc:
        raise DeployError([f"models[{i}]: {exc}"]) from None
    layout = result.recommended
    if layout is None:
        why = result.layouts[0].reason if result.layouts else "no layout"
        raise DeployError(
            [f"models[{i}]: {spec.name} does not fit the cluster: {why} (see `deepfleet plan -f`)"]
        )
    per_node = cfg.cluster.devices_per_node
    if layout.attn_dp > 1 and layout.devices_per_replica > per_node:
        raise DeployError(
            [
                f"models[{i}].parallel: data-parallel attention over {layout.attn_dp} devices "
                f"spans nodes of {per_node}; set a tp x pp layout (e.g. {{tp: {per_node}, pp: "
                f"{layout.devices_per_replica // per_node}}})"
            ]
        )
    replicas = spec.fixed_replicas or layout.dp
    return ModelDeployment(
        index=i,
        spec=spec,
        layout=layout,
        replicas=replicas,
        weight_format=result.weight_format.name,
        weight_bytes=result.weight_bytes,
        devices_per_node=per_node,
        note=note,
        kv_cache=cfg.kv_cache,
    )


def deploy_plan(cfg: FleetConfig) -> DeployPlan:
    """Plan every model of `cfg` for a deployment; DeployError lists what cannot be."""
    problems = [p for i, m in enumerate(cfg.models) for p in _source_problems(cfg, i, m)]
    if problems:
        raise DeployError(problems)
    models = tuple(d for i, m in enumerate(cfg.models) for d in _deploy_models(cfg, i, m))
    result = DeployPlan(cfg, cluster_for(cfg).device, models)
    c = cfg.cluster
    if result.devices_used > c.nodes * c.devices_per_node:
        used = ", ".join(
            f"{m.spec.name}: {m.replicas} x {m.devices_per_replica}" for m in result.models
        )
        raise DeployError(
            [
                f"models: the replicas need {result.devices_used} devices ({used}), the cluster "
                f"has {c.nodes * c.devices_per_node} (cluster.nodes x cluster.devices_per_node)"
            ]
        )
    return result
