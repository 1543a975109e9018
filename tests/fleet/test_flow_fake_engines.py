"""`serve` with a real controller, gateway and a fake engine: when it says Serving, the gateway
answers a request (no 503 "no ready replica" while its table lags fleet.json)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from deepfleet.config import FleetConfig
from deepfleet.engines.base import LaunchSpec, ReplicaPlan
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.events import FleetEvent, Serving
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.lifecycle import serve
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.state import FleetState, NodeStatus, ReplicaStatus
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy

FAST = SupervisorPolicy(startup_timeout_s=30, health_interval_s=0.1, stop_grace_s=2)


class FakeEngineLauncher:
    """Local replicas that run tests.helpers.fake_engine_main instead of an engine."""

    name = "local"

    def __init__(self) -> None:
        self._probe = HttpProbe()

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]:
        return [ReplicaPlan(cfg.models[0], "tiny-0", "/m", "127.0.0.1", free_port())]

    def runner(
        self,
        plan: ReplicaPlan,
        status: ReplicaStatus,
        on_change: Callable[[], None],
        policy: SupervisorPolicy,
    ) -> Supervisor:
        # Up a second after the gateway, as an engine that loads weights: the replica turns
        # ready in fleet.json while the gateway's table (refreshed every 200 ms) still lags.
        engine = f"{sys.executable} -m tests.helpers.fake_engine_main {plan.port} e0"
        argv = ["sh", "-c", f"sleep 1; exec {engine}"]
        return Supervisor(status, LaunchSpec(argv=argv), plan.url + "/health",
                          probe=self._probe, on_change=on_change, policy=policy)  # fmt: skip

    async def nodes(self) -> list[NodeStatus]:
        return []

    async def close(self) -> None:
        await self._probe.close()


def test_serving_means_the_gateway_answers(tmp_path: Path) -> None:
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "tiny", "replicas": 1}], "gateway": {"port": free_port()}}
    )
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    events: list[FleetEvent] = []
    answers: list[int] = []
    seen: list[FleetState] = []

    async def on_serving() -> None:
        state = next(e.state for e in events if isinstance(e, Serving))
        seen.append(state)
        async with httpx.AsyncClient() as client:
            r = await client.post(
                state.gateway_url + "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
                timeout=10,
            )
        answers.append(r.status_code)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(controller, events.append, stop, ()))
        for _ in range(600):
            if any(isinstance(e, Serving) for e in events) or task.done():
                break
            await asyncio.sleep(0.05)
        try:
            await on_serving()
        finally:
            stop.set()
            await task

    asyncio.run(main())
    assert answers == [200]
    pids = [r.pid for r in [seen[0].gateway, *seen[0].replicas] if r is not None]
    assert len(pids) == 2 and not any(pid_alive(p) for p in pids)
