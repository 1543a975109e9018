"""A scale-up whose replica cannot be placed (Ray mode with a full cluster: its placement
group waits, fleet/ray/launcher.py) shows in the model's reason as `pending: not enough GPUs`,
which `deepfleet status` prints. The pending replica here is a runner that holds the Ray
launcher's detail for a waiting placement group; the rest (controller, gateway, first
replica) is real."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from deepfleet.cli.live import fleet_table
from deepfleet.config import FleetConfig
from deepfleet.engines.base import ReplicaPlan
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.launcher import ReplicaRunner
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.ray.placement import Placement
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, serving, wait_for

FAST = SupervisorPolicy(startup_timeout_s=60, health_interval_s=0.1, stop_grace_s=2)
GROUP = Placement(({"GPU": 1.0},), "STRICT_PACK", 1)


class Unplaced:
    """A replica whose placement group waits for a GPU the cluster does not have."""

    def __init__(self, status: ReplicaStatus, on_change: Callable[[], None]) -> None:
        self.status, self.on_change = status, on_change
        self.stopped = asyncio.Event()

    async def run(self) -> None:
        self.status.state = ReplicaState.STARTING
        self.status.detail = f"waiting for {GROUP.describe()}"  # as RayReplica says it
        self.on_change()
        await self.stopped.wait()
        self.status.state = ReplicaState.STOPPED

    async def stop(self) -> None:
        self.stopped.set()


class FullCluster(FakeEngineLauncher):
    """The first replica runs; any later one waits for a placement."""

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> ReplicaRunner:
        if plan.replica_id == "tiny-0":
            return super().runner(plan, status, on_change, policy)
        return Unplaced(status, on_change)


def test_a_full_cluster_is_reported_as_pending(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "tiny", "source": "org/tiny", "replicas": {"min": 1, "max": 2}}],
            "gateway": {"port": free_port()},
        }
    )
    launcher = FullCluster()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=0.2, window_s=1.0)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with serving(controller, scaler):
            # a decision for 2 (as an up decision records and starts it)
            controller.state.models[0].desired = 2
            scaler.moves["tiny"] = asyncio.ensure_future(scaler._scale(cfg.models[0], 1, 2))
            pending = lambda: (controller.state.models[0].reason or "").startswith("pending")  # noqa: E731
            await wait_for(pending, 30, step=0.1)
            seen["reason"] = controller.state.models[0].reason
            console = Console(width=250, record=True)
            console.print(fleet_table(controller.state))
            seen["status"] = console.export_text()

    asyncio.run(main())
    assert seen["reason"] == (
        "pending: not enough GPUs (tiny-1 waiting for 1 x {GPU: 1} STRICT_PACK)"
    ), seen["reason"]
    assert "pending: not enough GPUs" in seen["status"]
