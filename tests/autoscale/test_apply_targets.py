"""`deepfleet apply` of new autoscaling targets (issue 24): a change that touches only
`autoscale:` or the bounds of `replicas: {min, max}` restarts nothing; the controller's
autoscaler takes the new targets live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deepfleet.config import FleetConfig
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.changes import changes
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.rollout import Rollout
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, serving

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)
PORT = free_port()


def config(**model: Any) -> FleetConfig:
    spec = {"name": "tiny", "source": "org/tiny", "replicas": {"min": 1, "max": 2}, **model}
    return FleetConfig.model_validate({"models": [spec], "gateway": {"port": PORT}})


@pytest.mark.parametrize(
    ("new", "action", "differences"),
    [
        ({"autoscale": {"itl_p90_ms": 20}}, "retarget", ["autoscale.itl_p90_ms: unset -> 20.0"]),
        ({"replicas": {"min": 0, "max": 4}}, "retarget", ["replicas.max: 2 -> 4",
                                                          "replicas.min: 1 -> 0"]),
        ({"replicas": 2}, "scale", ["replicas"]),
        ({"autoscale": {"itl_p90_ms": 20}, "engine_args": {"max_num_seqs": 8}}, "replace",
         ["autoscale.itl_p90_ms", "engine_args.max_num_seqs: unset -> 8"]),
        ({"autoscale": {"itl_p90_ms": 20}, "routing": "least_load"}, "route",
         ["autoscale.itl_p90_ms", "routing"]),
    ],
)  # fmt: skip
def test_the_plan(new: dict[str, Any], action: str, differences: list[str]) -> None:
    (change,) = changes(config(), config(**new)).models
    assert change.action == action
    for start in differences:
        assert any(d.startswith(start) for d in change.differences), change.differences


def test_new_targets_apply_live_without_a_restart(tmp_path: Path) -> None:
    cfg = config()
    new = config(autoscale={"itl_p90_ms": 20, "up_cooldown_s": 5}, replicas={"min": 1, "max": 3})
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=0.3, window_s=1.0)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with serving(controller, scaler):
            before = [(r.replica_id, r.pid) for r in controller.state.replicas]
            rollout = Rollout(controller, new, 1, grace_s=5)
            await rollout.run()
            seen["status"] = rollout.status
            await asyncio.sleep(1.0)  # a few autoscaler ticks
            seen["same"] = [(r.replica_id, r.pid) for r in controller.state.replicas] == before
            seen["targets"] = scaler.cores["tiny"].t

    asyncio.run(main())
    assert seen["status"].phase == "done", seen["status"]
    assert seen["status"].steps == ["tiny: autoscaling targets changed; no replica restarted"]
    assert seen["same"]
    t = seen["targets"]
    assert (t.itl_p90_s, t.up_cooldown_s, t.max_replicas) == (0.02, 5, 3)
