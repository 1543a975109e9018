"""`deepfleet apply`: the plan (changes.py) and its rollout in a running controller
(rollout.py) with a real gateway and fake engines under streaming load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from deepfleet.config import FleetConfig
from deepfleet.fleet.applied import read_applied
from deepfleet.fleet.changes import changes
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.events import FleetEvent, Serving
from deepfleet.fleet.lifecycle import APPLY_SIGNAL, serve
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.rollout import write_request
from deepfleet.fleet.state import ApplyStatus
from deepfleet.fleet.supervisor import SupervisorPolicy
from tests.helpers.fake_fleet import FakeEngineLauncher, stream_once

FAST = SupervisorPolicy(startup_timeout_s=20, health_interval_s=0.1, stop_grace_s=2)


def config(**model: Any) -> FleetConfig:
    spec = {"name": "tiny", "source": "org/tiny", "replicas": 2, **model}
    return FleetConfig.model_validate({"models": [spec], "gateway": {"port": free_port()}})


# -- the plan ----------------------------------------------------------------------------------
def test_an_engine_argument_replaces_the_replicas() -> None:
    old, new = config(engine_args={"max_num_seqs": 8}), config(engine_args={"max_num_seqs": 16})
    (change,) = changes(old, new).models
    assert change.action == "replace"
    assert change.differences == ["engine_args.max_num_seqs: 8 -> 16"]


def test_counts_and_routing_change_in_place() -> None:
    assert changes(config(), config(replicas=3)).models[0].action == "scale"
    assert changes(config(), config(routing="least_load")).models[0].action == "route"
    plan = changes(config(), config())
    assert plan.models[0].action == "keep" and not plan.changes_anything
    assert plan.lines()[-1] == "nothing to change in the running fleet"


def test_models_added_and_removed_and_sections_not_applied() -> None:
    old = config()
    new = FleetConfig.model_validate(
        {
            "models": [{"name": "other", "replicas": 1}],
            "gateway": {"port": old.gateway.port, "workers": 3},
        }
    )
    plan = changes(old, new)
    assert [(m.model, m.action) for m in plan.models] == [("other", "add"), ("tiny", "remove")]
    assert any(n.startswith("gateway.workers: 1 -> 3") for n in plan.not_applied)
    assert plan.to_json()["changes_anything"] is True


# -- the rollout -------------------------------------------------------------------------------
def run_apply(tmp_path: Path, new: FleetConfig, streams: int = 4) -> dict[str, Any]:
    """Start a fleet of `config()`, keep `streams` streams going, apply `new` (as
    `deepfleet apply` does: request file + SIGUSR1), and report what happened."""
    cfg = config()
    new = new.model_copy(update={"gateway": cfg.gateway})
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    events: list[FleetEvent] = []
    results: list[str] = []
    out: dict[str, Any] = {"results": results}

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
            old = [(r.replica_id, r.pid) for r in controller.state.replicas]
            done_loading = asyncio.Event()
            clients = [asyncio.create_task(load(url, done_loading)) for _ in range(streams)]
            await asyncio.sleep(1.5)
            write_request(tmp_path, new, 1, grace_s=10)
            os.kill(os.getpid(), APPLY_SIGNAL)
            for _ in range(1200):
                status = controller.state.apply
                if status is not None and status.finished:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # keep the load on after the change
            done_loading.set()
            await asyncio.gather(*clients)
            out["apply"] = controller.state.apply
            out["old"] = old
            out["replicas"] = [
                (r.replica_id, r.generation, r.engine_args, r.state.value)
                for r in controller.state.replicas
            ]
            out["on_disk"] = json.loads((tmp_path / "fleet.json").read_text())["apply"]
        finally:
            stop.set()
            await task

    asyncio.run(main())
    return out


def test_apply_replaces_every_replica_under_load_without_a_failed_request(
    tmp_path: Path,
) -> None:
    new = config(engine_args={"max_num_seqs": 4}, replicas=3)
    out = run_apply(tmp_path, new)
    status: ApplyStatus = out["apply"]
    assert status.phase == "done", status
    assert out["on_disk"]["phase"] == "done"
    bad = [r for r in out["results"] if r != "ok"]
    assert out["results"] and bad == []
    # The new replicas carry the new argument and generation; the old ones are gone.
    assert sorted(out["replicas"]) == [
        ("tiny-2", 1, {"max_num_seqs": 4}, "ready"),
        ("tiny-3", 1, {"max_num_seqs": 4}, "ready"),
        ("tiny-4", 1, {"max_num_seqs": 4}, "ready"),
    ]
    assert not any(pid_alive(pid) for _, pid in out["old"] if pid)
    assert any("draining tiny-0" in s for s in status.steps)
    applied = read_applied(tmp_path)
    assert applied is not None and applied.models[0].engine_args == {"max_num_seqs": 4}


def test_a_new_replica_that_cannot_start_leaves_the_old_ones_serving(tmp_path: Path) -> None:
    out = run_apply(tmp_path, config(engine_args={"fail": True}), streams=2)
    status: ApplyStatus = out["apply"]
    assert status.phase == "failed" and "did not start" in (status.error or "")
    assert [r for r in out["results"] if r != "ok"] == []
    assert sorted(r[0] for r in out["replicas"]) == ["tiny-0", "tiny-1"]
    applied = read_applied(tmp_path)
    assert applied is not None and applied.models[0].engine_args == {}


def test_signal_without_a_request_is_ignored(tmp_path: Path) -> None:
    """A stray SIGUSR1 (no request file) is logged, not fatal."""
    cfg = config(replicas=1)
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(controller, lambda e: None, stop, ()))
        await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.3)
        assert not task.done() and controller.state.apply is None
        stop.set()
        await task

    asyncio.run(main())


def test_stopping_the_fleet_lets_running_streams_finish(tmp_path: Path) -> None:
    """SIGTERM to the controller (what `deepfleet down` sends) drains: the gateway finishes
    the streams it has before the engines stop."""
    cfg = config(replicas=1)
    launcher = FakeEngineLauncher()
    controller = Controller(cfg, tmp_path, launcher.plans(cfg, {}), policy=FAST, launcher=launcher)
    events: list[FleetEvent] = []
    results: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(controller, events.append, stop, ()))
        for _ in range(400):
            if any(isinstance(e, Serving) for e in events) or task.done():
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(timeout=30) as client:
            url = controller.state.gateway_url
            streams = [asyncio.create_task(stream_once(client, url)) for _ in range(3)]
            await asyncio.sleep(0.4)  # the streams run (1 s each)
            stop.set()
            results.extend(await asyncio.gather(*streams))
        await task

    asyncio.run(main())
    assert results == ["ok", "ok", "ok"]
