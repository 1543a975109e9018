"""The supervisor actor: one per replica, scheduled into bundle 0 of the replica's placement
group, so it runs on the replica's (first) node.

It picks the engine's address on its node (`on_node`: the node's IP, a free port, and for a
NIXL engine of a disaggregated model its side channel, VLLM_NIXL_SIDE_CHANNEL_HOST/PORT: vLLM
would advertise localhost to decode engines on other nodes, and two NIXL engines on one node
would both take 5600). The engine publishes its KV events on the node's IP, on a port it
binds itself (kvcache/endpoints.py, ENGINE_PICKS: picking one here and handing it over would
race other processes for it); once the engine is ready the actor asks it where
(`GET /kv_event_sources`) and reports that endpoint with the ready state, so the head's
gateways and relay subscribe before the first request is routed there. It starts the engine
under the guard (which kills the engine when this actor's process dies), and keeps it up
with the same Supervisor as local mode: health checks, restarts with backoff. The
controller polls `status()`; the actor also reads the engine's queue (running + waiting
requests) from its /metrics as the replica's load.

The actor is detached (fleet.ray.survivors): it and its engine outlive the controller that
created it. Supervision is one task however many controllers call `run()`: a new controller
that adopts the actor calls `run()` again to learn when it ends, and waits on the same task.
`identity()` tells that controller what the actor runs, checked on the actor's own node.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace

import aiohttp

from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.base import LaunchSpec
from deepfleet.engines.load import VLLM_METRICS, LoadMetrics, parse_load
from deepfleet.engines.vllm import SERVER_MODULE
from deepfleet.fleet import cpu_share
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.pools import nixl_env
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import same_process
from deepfleet.fleet.ray.placement import data_parallel_ranks
from deepfleet.fleet.ray.start import NODE_CORES_ENV
from deepfleet.fleet.ray.survivors import HostIdentity
from deepfleet.fleet.ray.vllm_entry import NAMESPACE_ENV, PG_ENV
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy
from deepfleet.kvcache.endpoints import ENGINE_PICKS, bound_endpoint

LOAD_EVERY_S = 2.0


def parse_cores(text: str) -> list[int]:
    """ "0-3,8" -> [0, 1, 2, 3, 8]."""
    cores: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        cores += range(int(lo), int(hi or lo) + 1)
    return sorted(set(cores))


def engine_cores(slot: tuple[int, int] | None, env: dict[str, str]) -> str | None:
    """VLLM_CPU_OMP_THREADS_BIND for CPU replica `slot` = (index, count) on this node: its
    share of the node's cores; None lets vLLM choose (a lone replica on an unrestricted node)."""
    if slot is None:
        return None
    index, count = slot
    cores = node_cores(env)
    if count <= 1:
        return ",".join(map(str, cores)) if env.get(NODE_CORES_ENV) else None
    return cpu_share.cpu_binding(cores, index, count)


def engine_affinity(slot: tuple[int, int] | None, env: dict[str, str]) -> tuple[int, ...] | None:
    """The CPUs CPU replica `slot`'s engine may run on: none bound to another slot's engine
    (fleet.cpu_share.cpu_affinity); None: the actor's own."""
    return None if slot is None else cpu_share.cpu_affinity(node_cores(env), *slot)


def node_cores(env: dict[str, str]) -> list[int]:
    """The cores this node gives CPU replicas: DEEPFLEET_NODE_CORES, else this process's."""
    given = env.get(NODE_CORES_ENV)
    return parse_cores(given) if given else sorted(os.sched_getaffinity(0))


def load_from_metrics(text: str, metrics: LoadMetrics = VLLM_METRICS) -> float:
    """Running + waiting requests from an engine's /metrics page (0 when it reports neither)."""
    load = parse_load(text, metrics=metrics)
    return float(load.running + load.waiting) if load else 0.0


def on_node(
    plan: ReplicaPlan,
    ip: str,
    python: str,
    cpu_threads: str | None,
    cpu_affinity: tuple[int, ...] | None = None,
) -> ReplicaPlan:
    """`plan` as it runs on this node: the engine's address, its KV events bound on this
    node's IP (VLLM_HOST_IP) at a port of its choosing, and a NIXL engine's side channel
    (this node's IP, one free port per data-parallel rank; `fleet.pools.nixl_env`)."""
    port = free_port(ip)
    side = nixl_env(plan.model, ip, data_parallel_ranks(plan), {port})
    return replace(
        plan,
        host=ip,
        port=port,
        kv_events_port=0,
        kv_events_endpoint=ENGINE_PICKS,
        python=python,
        cpu_threads=cpu_threads,
        cpu_affinity=cpu_affinity,
        env_defaults={**plan.env_defaults, "VLLM_HOST_IP": ip, **side},
    )


def record_events(status: ReplicaStatus, endpoint: str | None) -> None:
    """`status` names where its engine publishes KV events (None: nowhere known)."""
    port = int(endpoint.rpartition(":")[2]) if endpoint else None
    status.kv_events_endpoint, status.kv_events_port = endpoint, port
    status.kv_events_bound = endpoint is not None


def in_placement_group(
    spec: LaunchSpec, group: str, namespace: str, env: dict[str, str]
) -> LaunchSpec:
    """The vLLM command of a replica that spans nodes, run through vllm_entry so that vLLM's
    Ray executor uses the replica's placement group."""
    argv = list(spec.argv)
    i = argv.index(SERVER_MODULE)
    argv[i] = "deepfleet.fleet.ray.vllm_entry"
    env = {**spec.env, **env, PG_ENV: group, NAMESPACE_ENV: namespace}
    return replace(spec, argv=argv, env=env)


def guarded(spec: LaunchSpec, watch_pid: int, python: str) -> LaunchSpec:
    return replace(
        spec, argv=[python, "-m", "deepfleet.fleet.ray.guard", str(watch_pid), "--", *spec.argv]
    )


class EngineHost:
    """The body of the supervisor actor (wrapped with ray.remote by the launcher)."""

    def __init__(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        policy: SupervisorPolicy,
        *,
        cpu_slot: tuple[int, int] | None = None,
        placement_group: str | None = None,
        namespace: str = "deepfleet",
    ) -> None:
        self._plan = plan
        self._status = status
        self._policy = policy
        self._cpu_slot = cpu_slot
        self._group = placement_group
        self._namespace = namespace
        self._supervisor: Supervisor | None = None
        self._probe = HttpProbe()
        self._stopped = False
        self._load_at = 0.0
        self._events_of: int | None = None  # the engine pid whose KV events endpoint is known
        self._running: asyncio.Future[ReplicaStatus] | None = None

    def _launch(self) -> tuple[ReplicaPlan, LaunchSpec]:
        import ray

        ip = ray.util.get_node_ip_address()
        env, slot = dict(os.environ), self._cpu_slot
        cpus = (engine_cores(slot, env), engine_affinity(slot, env))
        plan = on_node(self._plan, ip, sys.executable, *cpus)
        spec = get_adapter(plan.model.engine).launch_spec(plan)
        if self._group is not None:
            gcs = ray.get_runtime_context().gcs_address
            env = {"RAY_ADDRESS": gcs, "VLLM_HOST_IP": ip}
            spec = in_placement_group(spec, self._group, self._namespace, env)
        return plan, guarded(spec, os.getpid(), sys.executable)

    async def run(self) -> ReplicaStatus:
        """Start and supervise the engine until stop(); returns the last status. A second
        call (a controller that adopted this actor) waits on the first one's supervision; a
        caller that goes away (its controller died) cancels its wait, never the supervision."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._supervise())
        return await asyncio.shield(self._running)

    async def identity(self) -> HostIdentity:
        import ray

        st = self._status
        return HostIdentity(
            status=st,
            engine_alive=same_process(st.pid, st.pid_start),
            node_id=ray.get_runtime_context().get_node_id(),
            cpu_slot=self._cpu_slot,
        )

    async def _supervise(self) -> ReplicaStatus:
        plan, spec = self._launch()
        adapter = get_adapter(plan.model.engine)
        self._status.url = plan.url
        self._status.node = plan.host
        record_events(self._status, None)  # a status handed over from an earlier placement
        self._supervisor = Supervisor(
            self._status,
            spec,
            plan.url + adapter.health_path,
            probe=self._probe,
            on_change=lambda: None,
            policy=self._policy,
        )
        if not self._stopped:
            await self._supervisor.run()
        await self._probe.close()
        return self._status

    async def status(self) -> ReplicaStatus:
        if self._status.state is ReplicaState.READY:
            if self._events_of != self._status.pid:
                await self._read_events_endpoint()
            if time.monotonic() - self._load_at >= LOAD_EVERY_S:
                self._load_at = time.monotonic()
                self._status.load = await self._read_load()
        else:
            self._status.load = None
        return self._status

    async def _read_events_endpoint(self) -> None:
        """Ask the engine (started again: a new pid) where it bound its KV events; once per
        engine process that answers (an engine without the route answers 404: none)."""
        timeout = aiohttp.ClientTimeout(total=2.0)
        pid = self._status.pid
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._status.url + "/kv_event_sources") as resp,
            ):
                sources = await resp.json() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return  # asked again on the next status()
        self._events_of = pid
        record_events(self._status, bound_endpoint(sources))

    async def _read_load(self) -> float | None:
        timeout = aiohttp.ClientTimeout(total=1.0)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self._status.url + "/metrics") as resp,
            ):
                if resp.status != 200:
                    return None
                metrics = get_adapter(self._plan.model.engine).load_metrics
                return load_from_metrics(await resp.text(), metrics)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, IndexError):
            return None

    async def stop(self) -> None:
        self._stopped = True
        if self._supervisor is not None:
            await self._supervisor.stop()
        # Let run() finish so its last status reaches the controller.
        await asyncio.sleep(0)
