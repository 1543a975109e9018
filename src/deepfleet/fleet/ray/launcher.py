"""The Ray launcher: each replica becomes a placement group with one supervisor actor.

The controller runs on the head. For every replica a RayReplica creates the placement group
(waiting while the cluster lacks capacity), starts the supervisor actor in bundle 0, and polls
it: the actor's status (state, endpoint, pid, restarts, load) is mirrored into the fleet
state that the gateway routes from. When the actor dies or stops answering (its node died),
the group is removed and the replica placed again, wherever capacity allows, with backoff.

Actors and groups are detached and named (fleet.ray.survivors): a controller that dies leaves
its engines serving, and the next one adopts the matching ones (`adopt_engines`) instead of
placing and loading them again. Stopping a replica, or the fleet, kills its actor and removes
its group; `deepfleet down` removes whatever a dead controller left (fleet.ray.detached).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.placement_group import (
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from deepfleet.config.kvcache import KvCacheSpec
from deepfleet.config.schema import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.adopt import Adoption
from deepfleet.fleet.process import same_process
from deepfleet.fleet.ray.actor import EngineHost
from deepfleet.fleet.ray.detached import AdoptedHost, adopt_hosts
from deepfleet.fleet.ray.nodes import node_table
from deepfleet.fleet.ray.placement import (
    Placement,
    actor_options,
    layout_text,
    nodes_in_order,
    placement_for,
    split_tp_groups,
)
from deepfleet.fleet.ray.plans import device_key, plan_cluster
from deepfleet.fleet.ray.spread import spread_for_replica
from deepfleet.fleet.ray.survivors import FleetRecord, fleet_prefix, host_name
from deepfleet.fleet.state import (
    STATE_FILE,
    FleetState,
    NodeStatus,
    ReplicaState,
    ReplicaStatus,
    read_state,
)
from deepfleet.fleet.supervisor import SupervisorPolicy

MIRRORED = ("state", "pid", "pid_start", "url", "node", "started_at", "ready_at", "last_exit",
            "load", "kv_events_port", "kv_events_endpoint", "kv_events_bound")  # fmt: skip


class RayLauncher:
    """Replicas as Ray actors on a cluster this process is already connected to (`address`,
    in `namespace`): `connect.make_launcher` connects first and builds this."""

    name = "ray"

    def __init__(
        self,
        cfg: FleetConfig,
        state_dir: Path,
        *,
        address: str,
        namespace: str,
        poll_s: float = 0.5,
        unavailable_grace_s: float = 10.0,
    ) -> None:
        self.address = address
        self.state_dir = state_dir
        self.namespace = namespace
        self.prefix = fleet_prefix(state_dir)
        self.device_key = device_key(cfg)
        self.devices_per_node = cfg.cluster.devices_per_node
        self.poll_s = poll_s
        self.unavailable_grace_s = unavailable_grace_s
        self.host_class = ray.remote(EngineHost)
        self._nodes: dict[str, NodeStatus] = {n.node_id: n for n in node_table(ray.nodes())}
        self._cpu_slots: dict[str, dict[int, str]] = {}
        self._placements: dict[str, Placement] = {}
        self._adopted: dict[str, AdoptedHost] = {}
        FleetRecord(address, namespace, self.prefix).save(state_dir)

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]:
        """Replica plans for the cluster (raises InfeasibleConfig, see plan_cluster)."""
        placed = plan_cluster(cfg, model_paths, list(self._nodes.values()))
        self._placements = {plan.replica_id: where for plan, where in placed}
        return [plan for plan, _ in placed]

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> RayReplica:
        where = self._placements.get(plan.replica_id) or placement_for(
            plan, self.device_key, self.devices_per_node
        )
        status.layout = layout_text(plan)
        adopted = self._adopted.pop(plan.replica_id, None)
        if adopted is not None:
            adopted.take_over(status, MIRRORED)
        return RayReplica(self, plan, where, status, on_change, policy, adopted)

    def adopt_engines(
        self, previous: FleetState | None, plans: list[ReplicaPlan], kv_cache: KvCacheSpec
    ) -> tuple[list[ReplicaPlan], Adoption]:
        """Find the fleet's detached hosts, adopt the matching ones, kill the others and
        remove the placement groups no adopted host uses (fleet.ray.survivors). A live
        controller's hosts are never touched (`up` holds the state dir's lock; this guards
        other callers)."""
        last = read_state(self.state_dir / STATE_FILE)
        if (
            last
            and last.controller_pid != os.getpid()
            and same_process(last.controller_pid, last.controller_start)
        ):
            return plans, Adoption()
        addresses = {n.node_id: n.address for n in self._nodes.values()}
        decision, self._adopted = adopt_hosts(self.prefix, addresses, previous, plans, kv_cache)
        for rid, adopted in self._adopted.items():
            ident = adopted.identity
            if ident.cpu_slot is not None:
                self._cpu_slots.setdefault(ident.node_id, {})[ident.cpu_slot[0]] = rid
        return decision.plans, decision.adoption

    async def nodes(self) -> list[NodeStatus]:
        try:
            table = node_table(await asyncio.to_thread(ray.nodes))
        except (ConnectionError, RuntimeError):
            return list(self._nodes.values())
        self._nodes = {n.node_id: n for n in table}
        return table

    async def address_of(self, node_id: str) -> str:
        if node_id not in self._nodes:
            await self.nodes()
        node = self._nodes.get(node_id)
        return node.address if node else node_id[:12]

    def take_cpu_slot(self, node_id: str, replica_id: str) -> tuple[int, int]:
        """(index, count) of this CPU replica among the node's, for its core binding."""
        used = self._cpu_slots.setdefault(node_id, {})
        index = next(i for i in range(len(used) + 1) if i not in used)
        used[index] = replica_id
        return index, max(self.devices_per_node, index + 1)

    def release_cpu_slot(self, node_id: str, replica_id: str) -> None:
        used = self._cpu_slots.get(node_id, {})
        for index in [i for i, r in used.items() if r == replica_id]:
            del used[index]

    async def close(self) -> None:
        ray.shutdown()


class RayReplica:
    """Keeps one replica placed and running on the cluster until stop()."""

    def __init__(
        self,
        launcher: RayLauncher,
        plan: ReplicaPlan,
        placement: Placement,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
        adopted: AdoptedHost | None = None,
    ) -> None:
        self.launcher = launcher
        self.plan = plan
        self.placement = placement
        self.status = status
        self._on_change = on_change
        self._policy = policy
        self._stop = asyncio.Event()
        self._generation = 0
        self._adopted = adopted
        self._base_restarts = adopted.restarts if adopted else 0

    def _set(self, state: ReplicaState, **fields: object) -> None:
        self.status.state = state
        for k, v in fields.items():
            setattr(self.status, k, v)
        self._on_change()

    async def run(self) -> None:
        backoff = self._policy.backoff_initial_s
        while not self._stop.is_set():
            placed_at = time.monotonic()
            adopted, self._adopted = self._adopted, None
            if adopted is not None:
                reason = await self._run_adopted(adopted)
            else:
                reason = await self._place_and_run()
            if self._stop.is_set():
                break
            if time.monotonic() - placed_at >= self._policy.stable_after_s:
                backoff = self._policy.backoff_initial_s
            self._base_restarts = self.status.restarts + 1
            self._set(
                ReplicaState.RESTARTING,
                last_exit=reason,
                detail=None,
                pid=None,
                load=None,
                restarts=self._base_restarts,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, self._policy.backoff_max_s)
        self._set(ReplicaState.STOPPED, pid=None, load=None)

    async def _until(self, ref: Any) -> bool:
        """Await a Ray object ref unless stop() comes first; True if the ref finished."""
        done = asyncio.ensure_future(_await(ref))
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not done.done():
            done.cancel()
            return False
        done.result()
        return True

    async def _run_adopted(self, adopted: AdoptedHost) -> str:
        """Watch an adopted actor as if this runner had placed it."""
        ident = adopted.identity
        try:
            return await self._watch(adopted.actor, ident.status.node)
        finally:
            await self._retire(adopted.actor)
            self.launcher.release_cpu_slot(ident.node_id, self.plan.replica_id)
            if adopted.group is not None:
                await asyncio.to_thread(remove_placement_group, adopted.group)

    async def _place_and_run(self) -> str:
        self._generation += 1
        tag = f"{self._generation}.{secrets.token_hex(3)}"  # names stay unique across controllers
        name = host_name(self.launcher.prefix, self.plan.replica_id, tag)
        where = self.placement
        group = placement_group(
            list(where.bundles), strategy=where.strategy, name=name, lifetime="detached"
        )
        first_node: str | None = None
        actor: Any = None
        try:
            self._set(ReplicaState.STARTING, url="", node="", nodes=[], pid=None, load=None,
                      kv_events_port=None, kv_events_endpoint=None, kv_events_bound=False,
                      detail=f"waiting for {where.describe()}")  # fmt: skip
            if not await self._until(group.ready()):
                return "stopped"
            table = await asyncio.to_thread(placement_group_table, group)
            bundle_nodes = {int(k): str(v) for k, v in table["bundles_to_node_id"].items()}
            split = split_tp_groups(bundle_nodes, where.tp) if where.spans_nodes else []
            if split:
                return f"TP groups {split} were split over nodes by PACK; placing again"
            node_ids = nodes_in_order(bundle_nodes)
            first_node = node_ids[0]
            addresses = [await self.launcher.address_of(n) for n in node_ids]
            nodes = list(self.launcher._nodes.values())
            why = await asyncio.to_thread(
                spread_for_replica, self.plan.model_path, bundle_nodes, where.tp,
                self.plan.pp, nodes, self.launcher.state_dir,
            )  # fmt: skip
            if why:
                return why
            slot = None
            if self.launcher.device_key == "CPU":
                slot = self.launcher.take_cpu_slot(first_node, self.plan.replica_id)
            actor = self.launcher.host_class.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, 0),
                max_restarts=0,
                name=name,
                lifetime="detached",
                **actor_options(where),
            ).remote(
                self.plan,
                replace(self.status, restarts=0),
                self._policy,
                cpu_slot=slot,
                placement_group=name if where.spans_nodes else None,
                namespace=self.launcher.namespace,
            )
            self._set(ReplicaState.STARTING, nodes=addresses, node=addresses[0], detail=None)
            return await self._watch(actor, addresses[0])
        finally:
            if actor is not None:
                await self._retire(actor)
            if first_node is not None:
                self.launcher.release_cpu_slot(first_node, self.plan.replica_id)
            await asyncio.to_thread(remove_placement_group, group)

    async def _watch(self, actor: Any, node: str) -> str:
        """Mirror the actor's status until it dies, stops answering, or stop() is called."""
        running = asyncio.ensure_future(_await(actor.run.remote()))
        silent_since: float | None = None
        while not self._stop.is_set():
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({running, stop}, timeout=self.launcher.poll_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            stop.cancel()
            if self._stop.is_set():
                break
            if running.done():
                exc = running.exception()
                if isinstance(exc, ActorDiedError | ActorUnavailableError):
                    return f"node {node} lost: its supervisor actor is gone ({type(exc).__name__})"
                return f"supervisor on {node} ended: {_short(exc)}" if exc else "supervisor ended"
            try:
                st = await asyncio.wait_for(_await(actor.status.remote()), 5.0)
            except ActorDiedError as exc:
                return f"node {node} died or its supervisor was killed ({_short(exc)})"
            except (ActorUnavailableError, GetTimeoutError, TimeoutError):
                now = time.monotonic()
                silent_since = silent_since or now
                if self.status.state is not ReplicaState.UNHEALTHY:
                    self._set(ReplicaState.UNHEALTHY, detail=f"supervisor on {node} not answering")
                if now - silent_since >= self.launcher.unavailable_grace_s:
                    return f"node {node} unreachable for {now - silent_since:.0f}s"
                continue
            except RayActorError as exc:
                return f"supervisor on {node} failed: {_short(exc)}"
            if silent_since is not None:
                silent_since = None
                self.status.detail = None
            self._mirror(st)
        running.cancel()
        return "stopped"

    def _mirror(self, st: ReplicaStatus) -> None:
        changed = False
        for key in MIRRORED:
            value = getattr(st, key)
            if getattr(self.status, key) != value:
                setattr(self.status, key, value)
                changed = True
        restarts = self._base_restarts + st.restarts
        if self.status.restarts != restarts:
            self.status.restarts = restarts
            changed = True
        if changed:
            self._on_change()

    async def _retire(self, actor: Any) -> None:
        """Stop the engine gracefully when stopping the fleet, then end the actor."""
        if self._stop.is_set():
            with contextlib.suppress(RayActorError, TimeoutError):
                await asyncio.wait_for(_await(actor.stop.remote()), self._policy.stop_grace_s + 10)
        with contextlib.suppress(RayActorError, ValueError):
            ray.kill(actor, no_restart=True)

    async def stop(self) -> None:
        self._stop.set()
        if self.status.state is ReplicaState.READY:
            self._set(ReplicaState.STOPPING)


async def _await(ref: Any) -> Any:
    return await ref


def _short(exc: BaseException | None) -> str:
    text = str(exc).strip().splitlines()[0] if exc and str(exc).strip() else type(exc).__name__
    return text[:200]
