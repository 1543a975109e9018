"""`deepfleet apply` from an aggregated model to the same model disaggregated, in a running
controller with a real gateway and fake engines under streaming load: the new prefill and
decode replicas start beside the old ones (CPU: surge), keep their role in their names and
in the state, and no request fails on the way."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import httpx

from deepfleet.config import FleetConfig
from deepfleet.engines import ReplicaPlan
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.events import FleetEvent, Serving
from deepfleet.fleet.lifecycle import APPLY_SIGNAL, serve
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.replicas import MachineFacts, plan_local
from deepfleet.fleet.rollout import write_request
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, stream_once

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)
CPU_BOX = MachineFacts([0, 1], 16 * 2**30, {"nvidia": [], "ascend": []})
PD = {"prefill": {"replicas": 1}, "decode": {"replicas": 1}}


class PoolsLauncher(FakeEngineLauncher):
    """Fake engines on the local launcher's plans (roles, names, ports)."""

    def plans(self, cfg: FleetConfig, model_paths: dict[str, str]) -> list[ReplicaPlan]:
        return plan_local(cfg, {m.name: "/m" for m in cfg.models}, CPU_BOX)


def config(port: int, **model: Any) -> FleetConfig:
    spec = {"name": "tiny", "source": "org/tiny", **model}
    return FleetConfig.model_validate({"models": [spec], "gateway": {"port": port}})


def test_apply_moves_a_model_to_prefill_and_decode_pools_under_load(tmp_path: Path) -> None:
    port = free_port()
    cfg, new = config(port, replicas=2), config(port, disaggregation=PD)
    launcher = PoolsLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    events: list[FleetEvent] = []
    results: list[str] = []
    metrics: list[str] = []

    async def load(url: str, until: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not until.is_set():
                results.append(await stream_once(client, url))

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(controller, events.append, stop, ()))
        try:
            for _ in range(400):
                if any(isinstance(e, Serving) for e in events) or task.done():
                    break
                await asyncio.sleep(0.05)
            url = controller.state.gateway_url
            until = asyncio.Event()
            clients = [asyncio.create_task(load(url, until)) for _ in range(3)]
            await asyncio.sleep(1.0)
            write_request(tmp_path, new, 1, grace_s=10)
            os.kill(os.getpid(), APPLY_SIGNAL)
            for _ in range(1200):
                status = controller.state.apply
                if status is not None and status.finished:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # streams through the two phases after the change
            until.set()
            await asyncio.gather(*clients)
            async with httpx.AsyncClient(timeout=10) as client:
                metrics.append((await client.get(url + "/metrics")).text)
        finally:
            stop.set()
            await task

    asyncio.run(main())
    status = controller.state.apply
    assert status is not None and status.phase == "done", status
    assert sorted((r.replica_id, r.role) for r in controller.state.replicas) == [
        ("tiny-decode-3", "decode"),
        ("tiny-prefill-2", "prefill"),
    ]
    assert results and [r for r in results if r != "ok"] == []
    # The gateway ran the two phases for the requests after the change.
    found = re.search(r'deepfleet_pd_prefill_seconds_count\{model="tiny"\} (\d+)', metrics[0])
    assert found and int(found.group(1)) > 0, metrics[0][-2000:]
