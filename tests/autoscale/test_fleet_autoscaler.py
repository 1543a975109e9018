"""The controller's autoscaler with a real gateway and fake engines (tests/helpers): load
brings a second replica, idle takes it away by draining, and no request fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from deepfleet.autoscale.signals import p90, parse_gateway
from deepfleet.cli.live import fleet_table, state_json
from deepfleet.config import FleetConfig
from deepfleet.fleet.autoscaler import FleetAutoscaler
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import (
    FleetState,
    ModelRoute,
    ReplicaState,
    ReplicaStatus,
    read_state,
)
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, serving, stream_once

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)

METRICS = """\
# HELP deepfleet_time_to_first_token_seconds Gateway receive to first byte relayed
# TYPE deepfleet_time_to_first_token_seconds histogram
deepfleet_time_to_first_token_seconds_bucket{le="0.1",model="m"} %d
deepfleet_time_to_first_token_seconds_bucket{le="1.0",model="m"} %d
deepfleet_time_to_first_token_seconds_bucket{le="+Inf",model="m"} %d
deepfleet_time_to_first_token_seconds_count{model="m"} %d
deepfleet_time_to_first_token_seconds_sum{model="m"} 1.0
# HELP deepfleet_admission_queue_depth Requests waiting for an upstream slot
# TYPE deepfleet_admission_queue_depth gauge
deepfleet_admission_queue_depth 3.0
"""


def test_p90_of_the_samples_between_two_scrapes() -> None:
    old = parse_gateway(METRICS % (10, 10, 10, 10), 0.0)
    new = parse_gateway(METRICS % (11, 15, 20, 20), 5.0)
    assert new.queue == 3
    # 10 new samples: 1 under 0.1 s, 4 more under 1 s, 5 above: p90 in +Inf -> 1.0
    assert p90(old.ttft["m"], new.ttft["m"]) == (1.0, 10.0)
    assert p90(new.ttft["m"], new.ttft["m"]) == (None, 0.0)
    assert p90(None, parse_gateway(METRICS % (9, 10, 10, 10), 0).ttft["m"]) == (0.1, 10.0)


def test_load_brings_a_replica_and_idle_drains_it(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate(
        {
            "models": [
                {
                    "name": "tiny",
                    "source": "org/tiny",
                    "replicas": {"min": 1, "max": 2},
                    "autoscale": {"itl_p90_ms": 10, "up_cooldown_s": 0, "down_cooldown_s": 1},
                }
            ],
            "gateway": {"port": free_port(), "metrics_token": "t0ken"},
        }
    )
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=0.3, window_s=2.0)
    results: list[str] = []
    seen: dict[str, Any] = {"counts": []}

    def ready() -> int:
        return sum(
            r.state is ReplicaState.READY and not r.draining for r in controller.state.replicas
        )

    async def load(url: str, until: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not until.is_set():
                results.append(await stream_once(client, url))

    async def wait_for(check: Callable[[], bool], seconds: float) -> bool:
        for _ in range(int(seconds / 0.1)):
            if check():
                return True
            seen["counts"].append(len(controller.state.replicas))
            await asyncio.sleep(0.1)
        return False

    async def main() -> None:
        async with serving(controller, scaler):
            done = asyncio.Event()
            clients = [
                asyncio.create_task(load(controller.state.gateway_url, done)) for _ in range(4)
            ]
            seen["up"] = await wait_for(lambda: ready() == 2, 30)
            seen["up_reason"] = controller.state.models[0].reason
            await asyncio.sleep(1.0)
            done.set()
            await asyncio.gather(*clients)
            seen["down"] = await wait_for(lambda: len(controller.state.replicas) == 1, 30)
            state = read_state(tmp_path / "fleet.json")
            assert state is not None
            seen["route"] = state.models[0]

    asyncio.run(main())
    assert seen["up"], seen["counts"][-20:]
    assert "ITL p90" in seen["up_reason"]
    assert seen["down"]
    assert results and [r for r in results if r != "ok"] == []
    assert seen["route"].desired == 1 and seen["route"].reason


def test_status_shows_desired_and_reason() -> None:
    state = FleetState(
        1,
        "http://x",
        [ModelRoute("tiny", "round_robin", desired=2, reason="up: ITL p90 50ms > 10ms")],
    )
    state.replicas = [ReplicaStatus("tiny-0", "tiny", "vllm-cpu", "u", state=ReplicaState.READY)]
    console = Console(width=200, record=True)
    console.print(fleet_table(state))
    assert "tiny: 1 ready, desired 2 (up: ITL p90 50ms > 10ms)" in console.export_text()
    assert state_json(state)["models"][0]["desired"] == 2


def test_no_decision_without_the_gateways_numbers(tmp_path: Path) -> None:
    """A gateway that does not answer is not a fleet without traffic: nothing is scaled."""
    cfg = FleetConfig.model_validate(
        {
            "models": [{"name": "tiny", "source": "org/tiny", "replicas": {"min": 1, "max": 3}}],
            "gateway": {"port": free_port()},
        }
    )
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    scaler = FleetAutoscaler(controller, interval_s=0.01, window_s=1.0)

    async def main() -> None:
        for _ in range(3):
            await scaler.tick()
        await launcher.close()
        await scaler.close()

    asyncio.run(main())
    assert controller.state.models[0].desired is None
    assert not scaler.moves
