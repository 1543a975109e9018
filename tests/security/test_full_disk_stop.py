"""Finding 4: a full disk orphaned the fleet. Publishing the state (fleet.json) raised ENOSPC
before the kill in Supervisor.stop and in the controller's `finally`, and engines run in their
own sessions, so nothing stopped them. Publishing is best-effort; stopping always stops."""

from __future__ import annotations

import asyncio
import errno
import sys
from pathlib import Path
from typing import Any

import pytest

from deepfleet.config import FleetConfig
from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet import controller as controller_module
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.process import pid_alive

SLEEPER = LaunchSpec([sys.executable, "-c", "import time; time.sleep(120)"])


async def _no_probe(url: str) -> bool:
    return False


def test_a_full_disk_does_not_orphan_the_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = FleetConfig.model_validate({"models": [{"name": "m", "engine": "vllm-cpu"}]})
    controller = Controller(cfg, tmp_path, [], gateway_spec=SLEEPER)
    controller.gateway._probe = _no_probe
    gateway = controller.state.gateway
    assert gateway is not None
    disk_full = {"on": False}

    def write_state(path: Path, state: Any) -> None:
        if disk_full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(controller_module, "write_state", write_state)

    async def scenario() -> int:
        stop = asyncio.Event()
        task = asyncio.ensure_future(controller.run(stop))
        for _ in range(200):
            if gateway.pid is not None:
                break
            await asyncio.sleep(0.05)
        pid = gateway.pid
        assert pid is not None and pid_alive(pid)
        disk_full["on"] = True  # the disk fills up while the fleet runs
        stop.set()
        # The controller's own errors may surface; the child must be gone regardless.
        await asyncio.gather(asyncio.wait_for(task, 30), return_exceptions=True)
        return pid

    pid = asyncio.run(scenario())
    try:
        assert not pid_alive(pid), "the engine outlived `stop` on a full disk"
        assert controller.publish_failures >= 1
    finally:
        if pid_alive(pid):
            import os
            import signal

            os.killpg(pid, signal.SIGKILL)
