"""Carry out `deepfleet apply` in a running controller, without failing a request.

The plan comes from deepfleet.fleet.changes; this module does it, one model after another:

- new replicas start beside the old ones and must become ready before any old one leaves
  ("surge"); for a model on accelerators, whose devices the old replicas hold, one old replica
  drains and stops, then its replacement starts on the freed devices and must become ready
  before the next ("one by one");
- an old replica leaves by draining (`retire`): it is marked `draining` in the state file, so
  the gateway sends it nothing new; once the engine reports no running or waiting request (or
  the grace period ends: what still runs then migrates or ends), it is stopped;
- a new replica that does not become ready (it exits, or its startup timeout passes) fails the
  apply: the new replicas of that model are stopped and the old ones keep serving (one by one:
  the replica it replaced is started again).

Progress goes into the state file's `apply` (ApplyStatus), which `deepfleet apply` follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from deepfleet.config.schema import FleetConfig
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.engines.load import parse_load
from deepfleet.fleet.applied import write_applied
from deepfleet.fleet.changes import RESTART_SECTIONS, ModelChange, changes
from deepfleet.fleet.controller import Controller, model_route
from deepfleet.fleet.files import atomic_write, private_dir
from deepfleet.fleet.model_paths import model_paths
from deepfleet.fleet.replicas import on_cpu
from deepfleet.fleet.state import ApplyStatus, ReplicaState, ReplicaStatus

log = logging.getLogger(__name__)
# How long a replica marked draining keeps taking nothing new before its engine's queue is
# read: the gateway re-reads the state file every 0.2 s; this covers every worker.
SETTLE_S = 1.0
POLL_S = 0.5


class ApplyFailed(Exception):
    pass


def _next_index(controller: Controller, model: str) -> int:
    taken = [
        int(m.group(1))
        for r in controller.state.replicas
        if r.model == model and (m := re.search(r"-(\d+)$", r.replica_id))
    ]
    return max(taken, default=-1) + 1


def _renamed(controller: Controller, plans: Sequence[ReplicaPlan]) -> list[ReplicaPlan]:
    """The new plans with replica ids no running replica has (model-N or model-ROLE-N,
    counting on)."""
    out: list[ReplicaPlan] = []
    for plan in plans:
        index = _next_index(controller, plan.model.name) + sum(
            p.model.name == plan.model.name for p in out
        )
        role = f"{plan.role}-" if plan.role else ""  # a P/D pool's replica keeps its role
        out.append(replace(plan, replica_id=f"{plan.model.name}-{role}{index}"))
    return out


class Rollout:
    def __init__(
        self,
        controller: Controller,
        new: FleetConfig,
        generation: int,
        grace_s: float,
        *,
        ready_timeout_s: float | None = None,
    ) -> None:
        self.c = controller
        # What cannot change while the fleet runs stays as it is (changes.RESTART_SECTIONS).
        self.new = new.model_copy(update={s: getattr(controller.cfg, s) for s in RESTART_SECTIONS})
        self.generation = generation
        self.grace_s = grace_s
        self.ready_timeout_s = ready_timeout_s or controller.policy.startup_timeout_s
        self.status = ApplyStatus(generation, started_at=time.time())

    def step(self, line: str) -> None:
        log.info("apply %d: %s", self.generation, line)
        self.status.steps.append(line)
        self.c.publish()

    async def run(self) -> None:
        """Carry the plan out; the outcome is in `status` (phase done or failed)."""
        self.c.state.apply = self.status
        self.status.phase = "running"
        try:
            plan = changes(self.c.cfg, self.new)
            paths = await asyncio.to_thread(model_paths, self.new)
            plans = await asyncio.to_thread(self.c.launcher.plans, self.new, paths)
            for change in plan.models:
                mine = [p for p in plans if p.model.name == change.model]
                await self.model(change, mine)
            self.c.cfg = self.new
            write_applied(self.new, self.c.state_dir)
            self.status.phase = "done"
        except ApplyFailed as exc:
            self.status.phase, self.status.error = "failed", str(exc)
        except Exception as exc:  # a planning error (infeasible config, missing model, ...)
            log.exception("apply %d failed", self.generation)
            self.status.phase, self.status.error = "failed", f"{type(exc).__name__}: {exc}"
        self.status.finished_at = time.time()
        self.c.publish()

    async def model(self, change: ModelChange, plans: list[ReplicaPlan]) -> None:
        name, action = change.model, change.action
        old = self.c.replicas_of(name)
        if action == "keep":
            return
        if action == "retarget":  # the autoscaler reads the new targets from controller.cfg
            self.step(f"{name}: autoscaling targets changed; no replica restarted")
            return
        if action in ("route", "add", "scale", "replace"):
            self._route(name, plans)
        if action == "route":
            self.step(f"{name}: routing -> {plans[0].model.routing}" if plans else name)
        elif action == "add":
            await self._start(name, plans)
        elif action == "remove":
            await self._retire_all(old)
            self.c.state.models = [m for m in self.c.state.models if m.name != name]
            self.step(f"{name}: removed")
        elif action == "scale":
            if len(plans) > len(old):
                await self._start(name, plans[len(old) :])
            else:
                await self._retire_all(old[len(plans) :])
        elif self._one_by_one(plans):
            await self._replace_one_by_one(name, old, plans)
        else:
            await self._start(name, plans)
            await self._retire_all(old)

    def _route(self, name: str, plans: list[ReplicaPlan]) -> None:
        spec = next((m for m in self.new.models if m.name == name), None)
        if spec is None:
            return
        route = model_route(spec, plans)
        others = [m for m in self.c.state.models if m.name != name]
        index = next((i for i, m in enumerate(self.c.state.models) if m.name == name), None)
        if index is None:
            self.c.state.models = [*others, route]
        else:
            self.c.state.models[index] = route
        self.c.publish()

    @staticmethod
    def _one_by_one(plans: list[ReplicaPlan]) -> bool:
        """Replicas on accelerators: the old ones hold the devices the new ones need."""
        return not all(on_cpu(p.model) for p in plans)

    # -- starting -------------------------------------------------------------------------
    async def _start(self, name: str, plans: Sequence[ReplicaPlan]) -> list[ReplicaStatus]:
        return await start(
            self.c, name, plans, self.generation, self.ready_timeout_s, self.grace_s, self.step
        )

    # -- leaving --------------------------------------------------------------------------
    async def _retire_all(self, replicas: Sequence[ReplicaStatus]) -> None:
        await asyncio.gather(*(self._retire(r, grace_s=self.grace_s) for r in replicas))

    async def _retire(self, status: ReplicaStatus, *, grace_s: float) -> None:
        await retire(self.c, status, grace_s, self.step)

    async def _replace_one_by_one(
        self, name: str, old: list[ReplicaStatus], plans: list[ReplicaPlan]
    ) -> None:
        for i, plan in enumerate(plans):
            if i < len(old):
                previous = self.c.plans.get(old[i].replica_id)
                await self._retire(old[i], grace_s=self.grace_s)
                try:
                    await self._start(name, [plan])
                except ApplyFailed:
                    if previous is not None:  # put back what this step took away
                        self.c.add_replica(
                            replace(previous, replica_id=f"{name}-{_next_index(self.c, name)}"),
                            old[i].generation,
                        )
                    raise
            else:
                await self._start(name, [plan])
        await self._retire_all(old[len(plans) :])


# -- the two moves, shared with the autoscaler (deepfleet.fleet.autoscaler) ---------------------
async def start(
    c: Controller,
    name: str,
    plans: Sequence[ReplicaPlan],
    generation: int,
    ready_timeout_s: float,
    grace_s: float,
    step: Callable[[str], None],
) -> list[ReplicaStatus]:
    """Start replicas of `name` from `plans` (renamed to ids no replica has) and wait until
    all are ready; if one is not, stop them all and raise ApplyFailed."""
    plans = c.prepare(_renamed(c, plans))
    started = [c.add_replica(p, generation) for p in plans]
    ids = ", ".join(s.replica_id for s in started)
    step(f"{name}: starting {ids}")
    failed = await wait_ready(started, ready_timeout_s)
    if failed:
        await asyncio.gather(*(retire(c, s, grace_s, step) for s in started))
        raise ApplyFailed(f"{name}: {failed}; the old replicas keep serving")
    step(f"{name}: {ids} ready")
    return started


async def wait_ready(started: list[ReplicaStatus], timeout_s: float) -> str | None:
    """None once all are ready; else why one of them is not."""
    deadline = time.monotonic() + timeout_s
    while True:
        for s in started:
            if s.restarts > 0:
                return f"{s.replica_id} did not start ({s.last_exit}); see {s.log}"
        if all(s.state is ReplicaState.READY for s in started):
            return None
        if time.monotonic() > deadline:
            late = [s.replica_id for s in started if s.state is not ReplicaState.READY]
            return f"{', '.join(late)} not ready after {timeout_s:.0f}s"
        await asyncio.sleep(POLL_S)


async def retire(
    c: Controller, status: ReplicaStatus, grace_s: float, step: Callable[[str], None]
) -> None:
    """Drain one replica (no new requests; wait for its engine's queue to empty, at most
    `grace_s`), then stop it."""
    rid = status.replica_id
    status.draining = True
    step(f"{status.model}: draining {rid}")
    await asyncio.sleep(SETTLE_S)
    left = await _wait_idle(c, status, grace_s)
    await c.remove_replica(rid)
    note = f" ({left} requests still running after {grace_s:g}s)" if left else ""
    step(f"{status.model}: stopped {rid}{note}")


async def _wait_idle(c: Controller, status: ReplicaStatus, grace_s: float) -> int:
    """0 once the engine has nothing running or waiting; else what it still has when
    `grace_s` ends (or 0 when it cannot tell: it is not running)."""
    metrics = get_adapter(status.engine).load_metrics
    deadline = time.monotonic() + grace_s
    left = 0
    while status.url:
        text = await c.probe_text(status.url + "/metrics")
        load = parse_load(text, metrics=metrics) if text is not None else None
        if load is None:
            return 0
        left = load.running + load.waiting
        if left == 0 or time.monotonic() > deadline:
            return left
        await asyncio.sleep(POLL_S)
    return left


# -- the request from `deepfleet apply` ---------------------------------------------------
REQUEST_FILE = "apply-request.json"


def write_request(state_dir: Path, cfg: FleetConfig, generation: int, grace_s: float) -> None:
    """What `deepfleet apply` asks of the controller (0600 in the private state dir); the
    controller reads it on SIGUSR1."""
    body = {"generation": generation, "grace_s": grace_s, "config": cfg.model_dump(mode="json")}
    atomic_write(private_dir(state_dir) / REQUEST_FILE, json.dumps(body))


class Applier:
    """The controller's side of `deepfleet apply`: one rollout at a time, started by a signal."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.task: asyncio.Task[None] | None = None

    def requested(self) -> None:
        """SIGUSR1: read the request and start its rollout (unless one is running)."""
        if self.task is not None and not self.task.done():
            log.warning("apply requested while apply %s runs; ignored", self.c.state.apply)
            return
        try:
            body = json.loads((self.c.state_dir / REQUEST_FILE).read_text())
            cfg = FleetConfig.model_validate(body["config"])
            generation, grace_s = int(body["generation"]), float(body["grace_s"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("apply request unreadable: %s", exc)
            return
        self.task = asyncio.ensure_future(Rollout(self.c, cfg, generation, grace_s).run())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
