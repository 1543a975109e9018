"""The controller: owns desired vs actual state for a fleet on one machine.

It starts one supervisor per replica and one for the gateway, and publishes every change to
the state file that the gateway routes from and `deepfleet status` reads. Given the state a
dead controller left (`previous`), it adopts the processes that still run and match
(deepfleet.fleet.adopt) and stops the ones that do not before it starts anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from deepfleet.config.kvcache import KV_ROUTING_FILE, KvRoutingSpec
from deepfleet.config.schema import FleetConfig, ModelSpec
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.base import LaunchSpec
from deepfleet.engines.offload import offload_plans, store_url
from deepfleet.fleet.adopt import (
    Adoption,
    EngineAdopter,
    adopt_others,
    adopt_replicas,
    engine_hash,
    spec_hash,
    stop_stale,
)
from deepfleet.fleet.applied import write_applied
from deepfleet.fleet.files import (
    atomic_write,
    engine_api_key,
    kv_store_password,
    log_file,
    metrics_token,
    private_dir,
)
from deepfleet.fleet.gateways import instance_address, instance_policy
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.launcher import Launcher, LocalLauncher, ReplicaRunner
from deepfleet.fleet.process import pid_start_time
from deepfleet.fleet.state import (
    STATE_FILE,
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    write_state,
)
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy
from deepfleet.kvcache.endpoints import local_events_endpoint
from deepfleet.net import is_loopback, reachable_host

log = logging.getLogger(__name__)
GATEWAY_SETTINGS = "gateway.json"
KEYS_DB = "keys.db"


def write_gateway_settings(cfg: FleetConfig, state_dir: Path) -> Path:
    """The gateway's section of the config, with the keys database resolved, for the gateway
    process to read at start."""
    update: dict[str, object] = {"keys_db": keys_db_path(cfg, state_dir)}
    g = cfg.gateway
    if g.instances > 1 and not is_loopback(g.host) and not g.metrics_token:
        # Loopback gateways behind HAProxy on the network: /metrics must not be open.
        update["metrics_token"] = metrics_token(state_dir)
    spec = g.model_copy(update=update)
    path = private_dir(state_dir) / GATEWAY_SETTINGS
    atomic_write(path, spec.model_dump_json(indent=1))  # 0600: it holds the metrics token
    return path


def write_kv_routing(spec: KvRoutingSpec, state_dir: Path) -> Path:
    """fleet.yaml's `kv_cache.routing` for the gateway's routing context, written atomically
    (a worker that starts meanwhile reads the old file or the new one, never half of one)."""
    path = private_dir(state_dir) / KV_ROUTING_FILE
    atomic_write(path, spec.model_dump_json(indent=1))
    return path


def keys_db_path(cfg: FleetConfig, state_dir: Path) -> Path:
    return (cfg.gateway.keys_db or state_dir / KEYS_DB).expanduser().resolve()


def gateway_launch(
    cfg: FleetConfig, state_dir: Path, python: str = sys.executable, index: int = 0
) -> LaunchSpec:
    """Gateway `index` of `gateway.instances` (deepfleet.fleet.gateways)."""
    host, port = instance_address(cfg, index)
    argv = [python, "-m", "deepfleet.gateway", "--state-file", str(state_dir / STATE_FILE),
            "--settings", str(write_gateway_settings(cfg, state_dir)),
            "--host", host, "--port", str(port), "--workers", str(cfg.gateway.workers)]  # fmt: skip
    return LaunchSpec(argv=argv, env=cfg.gateway.state.gateway_env())


def local_url(host: str, port: int) -> str:
    """The URL to reach a server on this machine, also when it binds every address."""
    return f"http://{reachable_host(host)}:{port}"


def model_route(model: ModelSpec, plans: list[ReplicaPlan]) -> ModelRoute:
    """The gateway's routing facts for one model, from its replicas' plans."""
    mine = [p for p in plans if p.model.name == model.name]
    lens = [p.max_model_len for p in mine if p.max_model_len]
    folder = Path(mine[0].model_path) if mine else None
    tokenizer = str(folder) if folder and (folder / "tokenizer.json").is_file() else None
    return ModelRoute(
        model.name,
        model.routing,
        min(lens) if lens else None,
        tokenizer=tokenizer,
        block_size=get_adapter(model.engine).block_size(model.engine_args),
        migration_limit=model.migration_limit,
        queue_timeout_s=model.queue_timeout_s,
    )


@dataclass(frozen=True)
class Service:
    """A companion process the controller supervises beside the gateway."""

    status: ReplicaStatus
    spec: LaunchSpec
    health_url: str
    policy: SupervisorPolicy = field(
        default_factory=lambda: SupervisorPolicy(startup_timeout_s=300)
    )
    # Started, and awaited until ready (or its startup timeout), before the replicas: a store
    # the engines connect to when they start.
    before_replicas: bool = False


class Controller:
    def __init__(
        self,
        cfg: FleetConfig,
        state_dir: Path,
        plans: list[ReplicaPlan],
        *,
        policy: SupervisorPolicy = SupervisorPolicy(),
        gateway_spec: LaunchSpec | None = None,
        services: Sequence[Service] = (),
        launcher: Launcher | None = None,
        node_poll_s: float = 2.0,
        previous: FleetState | None = None,
    ) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.state_path = state_dir / STATE_FILE
        private_dir(state_dir)
        write_kv_routing(cfg.kv_cache.routing, state_dir)  # before the gateway starts
        write_applied(cfg, state_dir)
        self.notes: list[str] = []
        self.launcher: Launcher = launcher or LocalLauncher()
        self.adoption: Adoption
        adopt = (
            self.launcher.adopt_engines
            if isinstance(self.launcher, EngineAdopter)
            else adopt_replicas
        )
        plans, self.adoption = adopt(previous, plans, cfg.kv_cache)
        plans = self.prepare(plans)
        gw_url = local_url(cfg.gateway.host, cfg.gateway.port)
        self._node_poll_s = node_poll_s
        self.state = FleetState(
            controller_pid=os.getpid(),
            controller_start=pid_start_time(os.getpid()),
            gateway_url=gw_url,
            models=[model_route(m, plans) for m in cfg.models],
            cluster=self.launcher.name,
        )
        self._probe = HttpProbe()
        self.policy = policy
        self.supervisors: list[ReplicaRunner] = []
        self.plans: dict[str, ReplicaPlan] = {}  # replica id -> its plan
        self._runners: dict[str, ReplicaRunner] = {}
        self._tasks: dict[str, asyncio.Future[None]] = {}  # replica id -> its runner's run()
        self._running = False
        for plan in plans:
            self.add_replica(plan)
        own_url = local_url(*instance_address(cfg, 0))  # gw_url, or behind HAProxy there
        gw_status = ReplicaStatus(
            replica_id="gateway",
            model="*",
            engine="gateway",
            url=own_url,
            log=str(log_file(state_dir, "gateway")),
        )
        self.state.gateway = gw_status
        gateway_spec = gateway_spec or gateway_launch(cfg, state_dir)
        gw_status.config_hash = spec_hash(gateway_spec)
        # Stopping, the gateway lets its requests finish for drain_grace_s (uvicorn's graceful
        # shutdown) before the engines stop: SIGKILL only after that.
        self.gateway = Supervisor(
            gw_status,
            gateway_spec,
            own_url + "/health",
            probe=self._probe,
            on_change=self.publish,
            policy=instance_policy(cfg, policy.stop_grace_s),
        )
        # Companion processes beside the gateway (e.g. the chat UI), supervised the same way.
        self.services = [
            Supervisor(
                svc.status,
                svc.spec,
                svc.health_url,
                probe=self._probe,
                on_change=self.publish,
                policy=svc.policy,
            )
            for svc in services
        ]
        self.state.services = [svc.status for svc in services]
        for svc in services:
            svc.status.config_hash = spec_hash(svc.spec)
        specs = {"gateway": gateway_spec, **{s.status.replica_id: s.spec for s in services}}
        adopt_others(previous, specs, self.adoption)
        self._adopt()
        self._first = [
            (sup, svc.policy.startup_timeout_s)
            for sup, svc in zip(self.services, services, strict=True)
            if svc.before_replicas
        ]
        self._listeners: list[Callable[[FleetState], None]] = []
        self._changed = asyncio.Event()  # set on every publish
        self.publish_failures = 0  # state writes that failed (e.g. a full disk)

    def _adopt(self) -> None:
        """Hand each adopted process to its supervisor (local runners only)."""
        by_id = {**self._runners, "gateway": self.gateway}
        by_id.update((sup.status.replica_id, sup) for sup in self.services)
        for rid, old in {**self.adoption.replicas, **self.adoption.others}.items():
            runner = by_id.get(rid)
            if isinstance(runner, Supervisor):
                runner.adopt(old)
        self.state.adopted = self.adoption.ids

    def prepare(self, plans: list[ReplicaPlan]) -> list[ReplicaPlan]:
        """What the fleet adds to every replica's plan: the KV offloading arguments."""
        state_dir = self.state_dir
        plans, notes = offload_plans(
            plans,
            self.cfg.kv_cache,
            store_url(self.cfg.kv_cache, lambda: kv_store_password(state_dir)),
        )
        for note in notes:
            if note not in self.notes:
                self.notes.append(note)
                log.warning("%s", note)
        # Engines answer /v1/* only with the fleet's key, which the gateway sends; they
        # publish KV events on a Unix socket in the private state dir, not on loopback TCP.
        key = engine_api_key(state_dir)
        return [
            replace(
                p,
                api_key=key,
                kv_events_endpoint=local_events_endpoint(
                    state_dir, p.kv_events_port, {**p.engine_defaults, **p.model.engine_args}
                ),
            )
            for p in plans
        ]

    def add_replica(self, plan: ReplicaPlan, generation: int = 0) -> ReplicaStatus:
        """Supervise one more replica (started at once when the fleet runs)."""
        status = ReplicaStatus(
            replica_id=plan.replica_id,
            model=plan.model.name,
            engine=plan.model.engine,
            url=plan.url if plan.port else "",
            log=str(log_file(self.state_dir, plan.replica_id)),
            kv_events_port=plan.kv_events_port,
            kv_events_endpoint=plan.kv_events_endpoint,
            devices=list(plan.devices),
            generation=generation,
            engine_args=dict(plan.model.engine_args),
            config_hash=engine_hash(plan, self.cfg.kv_cache),
            role=plan.role,
        )
        runner = self.launcher.runner(plan, status, self.publish, self.policy)
        self.state.replicas.append(status)
        self.supervisors.append(runner)
        self.plans[plan.replica_id] = plan
        self._runners[plan.replica_id] = runner
        if self._running:
            self._tasks[plan.replica_id] = asyncio.ensure_future(runner.run())
            self.publish()
        return status

    async def remove_replica(self, replica_id: str) -> None:
        """Stop one replica and forget it (drain it first: deepfleet.fleet.rollout)."""
        runner = self._runners.pop(replica_id)
        await asyncio.gather(runner.stop(), return_exceptions=True)
        task = self._tasks.pop(replica_id, None)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(task, return_exceptions=True)
        self.supervisors.remove(runner)
        self.plans.pop(replica_id, None)
        self.state.replicas = [r for r in self.state.replicas if r.replica_id != replica_id]
        self.publish()

    async def probe_text(self, url: str) -> str | None:
        """GET a page of one of the fleet's servers (an engine's /metrics)."""
        return await self._probe.text(url)

    def replicas_of(self, model: str) -> list[ReplicaStatus]:
        return [r for r in self.state.replicas if r.model == model]

    def subscribe(self, listener: Callable[[FleetState], None]) -> None:
        self._listeners.append(listener)

    def publish(self) -> None:
        """Best-effort: a state file that cannot be written (a full disk) is logged and
        counted, never raised, so supervising and stopping go on; the next change writes the
        whole state again."""
        self._changed.set()
        try:
            write_state(self.state_path, self.state)
        except OSError as exc:
            self.publish_failures += 1
            log.warning(
                "could not write %s (%s); retrying on the next change", self.state_path, exc
            )
        for listener in self._listeners:
            try:
                listener(self.state)
            except Exception:
                log.exception("a state listener failed")

    async def _watch_nodes(self) -> None:
        """Keep the cluster's nodes in the state (nothing to do for a launcher without nodes)."""
        while True:
            nodes = await self.launcher.nodes()
            if not nodes and not self.state.nodes:
                return
            if nodes != self.state.nodes:
                self.state.nodes = nodes
                self.publish()
            await asyncio.sleep(self._node_poll_s)

    async def _wait_first(self, stop: asyncio.Event) -> None:
        """Until every before-replicas service is ready, gave up, or the fleet is stopped.
        One that does not come up is reported in its status; the replicas start anyway."""
        for sup, timeout_s in self._first:
            deadline = time.monotonic() + timeout_s
            while sup.status.state is not ReplicaState.READY and sup.status.restarts == 0:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    break
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then stop the gateway (it drains) and every engine."""
        self.publish()
        if self.adoption.stale:  # they hold ports, devices and memory the new ones need
            await asyncio.to_thread(stop_stale, self.adoption.stale, self.policy.stop_grace_s)
        first = [sup for sup, _ in self._first]
        tasks: list[asyncio.Future[None]] = [asyncio.ensure_future(s.run()) for s in first]
        nodes = asyncio.ensure_future(self._watch_nodes())
        try:
            await self._wait_first(stop)
            rest = [s for s in (self.gateway, *self.services) if s not in first]
            tasks += [asyncio.ensure_future(s.run()) for s in rest]
            self._tasks = {
                rid: asyncio.ensure_future(r.run())
                for rid, r in self._runners.items()
                if r in self.supervisors  # the list is the truth (tests empty it)
            }
            self._running = True
            await stop.wait()
        finally:
            self._running = False
            self.state.stopping = True
            self.publish()
            nodes.cancel()
            tasks += self._tasks.values()
            # return_exceptions: one runner failing to stop does not leave the others running.
            await asyncio.gather(*(s.stop() for s in self.services), return_exceptions=True)
            await asyncio.gather(self.gateway.stop(), return_exceptions=True)
            await asyncio.gather(*(s.stop() for s in self.supervisors), return_exceptions=True)
            for t in [*tasks, nodes]:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._probe.close()
            await self.launcher.close()
            self.publish()
