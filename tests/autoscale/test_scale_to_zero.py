"""Scale to zero through the controller (issue 24), with a real gateway and fake engines: an
idle `min: 0` model drains to zero replicas and stays listed as cold; a request for it is held
by the gateway, the autoscaler sees it in the gateway's waiting gauge and starts a replica at
once (no window, no cool-down), and the request is served."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deepfleet.config import FleetConfig
from deepfleet.fleet.autoscaler import FleetAutoscaler, targets
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, serving, stream_once, wait_for

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)


def config(**autoscale: float) -> FleetConfig:
    return FleetConfig.model_validate(
        {
            "models": [
                {
                    "name": "tiny",
                    "source": "org/tiny",
                    "replicas": {"min": 0, "max": 2},
                    "autoscale": {"up_cooldown_s": 60, "down_cooldown_s": 0.5, **autoscale},
                }
            ],
            "gateway": {"port": free_port(), "metrics_token": "t0ken"},
        }
    )


def test_min_zero_reaches_the_decision_core() -> None:
    assert targets(config().models[0]).min_replicas == 0


def test_idle_to_zero_and_a_request_brings_one_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="deepfleet.fleet.autoscaler")
    cfg = config(idle_timeout_s=1.5)
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=5.0, window_s=2.0, cold_poll_s=0.2)
    seen: dict[str, Any] = {}

    def replicas() -> int:
        return len(controller.replicas_of("tiny"))

    async def main() -> None:
        async with serving(controller, scaler):
            url = controller.state.gateway_url
            seen["zero"] = await wait_for(lambda: replicas() == 0, 30, step=0.1)
            route = controller.state.models[0]
            seen["cold_wait_s"], seen["down_reason"] = route.cold_wait_s, route.reason
            await asyncio.sleep(0.5)  # the gateway re-reads the state file every 0.2 s
            async with httpx.AsyncClient(timeout=60) as client:
                listed = (await client.get(url + "/v1/models")).json()["data"]
                seen["listed"] = [(m["id"], m["status"]) for m in listed]
                started = time.monotonic()
                seen["result"] = await stream_once(client, url)
                seen["waited"] = time.monotonic() - started
            seen["up_reason"] = controller.state.models[0].reason
            seen["after"] = replicas()

    asyncio.run(main())
    assert seen["zero"], "the idle model did not reach zero replicas"
    assert seen["down_reason"].startswith("down: idle for")
    # measured: 2 x the fake engine's start (well under a second) + one 5 s tick
    assert 5.0 <= seen["cold_wait_s"] < 9.0
    assert seen["listed"] == [("tiny", "cold")]
    assert seen["result"] == "ok"
    # The loop's interval is 5 s; the cold poll (0.2 s) sees the request well before that.
    assert seen["waited"] < 4.5, seen["waited"]
    assert seen["up_reason"] == "up: a request for a model at zero replicas"
    assert seen["after"] == 1
    decisions = [r.getMessage() for r in caplog.records if " -> " in r.getMessage()]
    assert any("1 -> 0: down: idle" in d for d in decisions), decisions
    assert any("0 -> 1: up: a request for a model at zero" in d and "queued=1" in d
               for d in decisions), decisions  # fmt: skip
