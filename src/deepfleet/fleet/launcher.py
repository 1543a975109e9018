"""Launchers: where and how the controller runs engine replicas.

A launcher turns the config into replica plans and supervises each plan with a runner that
keeps the replica's ReplicaStatus current. `local` runs child processes on this machine;
`ray` places replicas on a Ray cluster (deepfleet.fleet.ray, imported only when chosen, so
local mode and the gateway never import Ray).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from deepfleet.config.schema import FleetConfig
from deepfleet.engines import ReplicaPlan, get_adapter
from deepfleet.fleet.adopt import group_rss, survivors
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.pools import shared_folders, with_local_storage
from deepfleet.fleet.replicas import MachineFacts, plan_local
from deepfleet.fleet.state import STATE_FILE, NodeStatus, ReplicaStatus, read_state
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy


class ReplicaRunner(Protocol):
    """Keeps one replica running until stop(); publishes through the status it was given."""

    async def run(self) -> None: ...

    async def stop(self) -> None: ...


class Launcher(Protocol):
    name: str

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]: ...

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> ReplicaRunner: ...

    async def nodes(self) -> list[NodeStatus]:
        """The cluster's nodes now; empty for a launcher without nodes to show."""
        ...

    async def close(self) -> None: ...


class LocalLauncher:
    """Engines as child processes of the controller, one supervisor each. With `state_dir`,
    a disaggregated model's shared-storage connector keeps its KV files there."""

    name = "local"

    def __init__(
        self,
        machine: MachineFacts | None = None,
        python: str = sys.executable,
        state_dir: Path | None = None,
    ) -> None:
        self._machine = machine
        self._python = python
        self._state_dir = state_dir
        self._probe = HttpProbe()

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]:
        if self._state_dir is not None:
            cfg = with_local_storage(cfg, self._state_dir)
        plans = plan_local(cfg, model_paths, self._machine or MachineFacts.probe(), self._python)
        for folder in shared_folders(cfg):  # in the private state dir, or the user's
            folder.mkdir(parents=True, exist_ok=True)
        return plans

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> Supervisor:
        adapter = get_adapter(plan.model.engine)
        spec = adapter.launch_spec(plan)
        if plan.devices and adapter.visible_devices_env:
            var = adapter.visible_devices_env
            spec = replace(spec, env={var: ",".join(plan.devices), **spec.env})
        return Supervisor(
            status,
            spec,
            plan.url + adapter.health_path,
            probe=self._probe,
            on_change=on_change,
            policy=policy,
        )

    async def nodes(self) -> list[NodeStatus]:
        return []

    async def close(self) -> None:
        await self._probe.close()


# Cluster mode -> "module:factory"; the factory takes (cfg, state_dir).
LAUNCHERS = {
    "local": "deepfleet.fleet.launcher:_local",
    "ray": "deepfleet.fleet.ray.connect:make_launcher",
}


class LauncherError(Exception):
    """The launcher cannot run here (unsupported mode, unreachable cluster); says the fix."""


def _local(cfg: FleetConfig, state_dir: Path) -> Launcher:
    """Engines a dead controller left running hold memory this plan may give them again
    (they are adopted, or stopped before new ones start): count it as available."""
    held = sum(group_rss(s.pid) for s in survivors(read_state(state_dir / STATE_FILE)) if s.pid)
    if not held:
        return LocalLauncher(state_dir=state_dir)
    machine = MachineFacts.probe()
    more = replace(machine, available_bytes=machine.available_bytes + held)
    return LocalLauncher(more, state_dir=state_dir)


def build_launcher(cfg: FleetConfig, state_dir: Path) -> Launcher:
    """The launcher for `cluster.mode`, imported only when it is the one chosen."""
    target = LAUNCHERS.get(cfg.cluster.mode)
    if target is None:
        raise LauncherError(
            f"cluster.mode {cfg.cluster.mode!r} is not run by `deepfleet up`; "
            f"`deepfleet render k8s -f FILE` writes its manifests (modes `up` runs: "
            f"{', '.join(LAUNCHERS)})"
        )
    module, factory = target.split(":")
    launcher: Launcher = getattr(importlib.import_module(module), factory)(cfg, state_dir)
    return launcher
