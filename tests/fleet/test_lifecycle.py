"""The start/stop flow without engines: the lock, `down` on stale and live state files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from deepfleet.config import FleetConfig
from deepfleet.fleet.controller import Controller
from deepfleet.fleet.events import ControllerKilled, FleetEvent, Serving, Stopped
from deepfleet.fleet.lifecycle import FleetAlreadyRunning, down, fleet_groups, fleet_lock, serve
from deepfleet.fleet.model_paths import model_paths
from deepfleet.fleet.process import pid_alive, pid_start_time
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, ReplicaStatus, write_state
from tests.fleet.test_supervisor import group_alive

SLEEPER = "import time; time.sleep(600)"
# Ignores SIGTERM, like a controller stuck in its shutdown.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
# A group leader with a child in its group, like an engine and its engine core.
ENGINE = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); time.sleep(600)"  # noqa: E501


def status(rid: str, pid: int | None) -> ReplicaStatus:
    return ReplicaStatus(
        rid, "m", "vllm", "http://x", ReplicaState.READY, pid=pid, pid_start=pid_start_time(pid)
    )


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def spawn(procs: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    procs.append(p)
    return p


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_down_without_a_state_file(tmp_path: Path) -> None:
    assert down(tmp_path, 1) is False


def test_down_on_a_stale_state_file_touches_nothing(tmp_path: Path) -> None:
    gone = dead_pid()
    state = FleetState(
        gone, "http://gw", replicas=[status("m-0", gone)], gateway=status("gateway", gone)
    )
    write_state(tmp_path / STATE_FILE, state)
    events: list[FleetEvent] = []
    assert down(tmp_path, 1, events.append) is False
    assert events == []


def test_down_stops_the_controller_then_kills_left_groups(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    controller = spawn(spawned, SLEEPER)
    engine = spawn(spawned, ENGINE)
    time.sleep(0.5)  # the engine's child exists
    state = FleetState(
        controller.pid,
        "http://gw",
        replicas=[status("m-0", engine.pid)],
        controller_start=pid_start_time(controller.pid),
    )
    write_state(tmp_path / STATE_FILE, state)
    events: list[FleetEvent] = []
    assert down(tmp_path, 0.5, events.append, poll_s=0.05) is True
    assert events == [Stopped()]
    assert controller.wait(5) == -15 and engine.wait(5) == -9
    time.sleep(0.2)
    assert group_alive(engine.pid) == []  # the engine's child went with its group


def test_down_kills_a_controller_that_ignores_sigterm(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    controller = spawn(spawned, STUBBORN)
    time.sleep(0.5)  # its handler is installed
    state = FleetState(controller.pid, "http://gw", controller_start=pid_start_time(controller.pid))
    write_state(tmp_path / STATE_FILE, state)
    events: list[FleetEvent] = []
    assert down(tmp_path, 0.3, events.append, poll_s=0.05) is True
    assert events == [ControllerKilled(controller.pid, 0.3), Stopped()]
    assert controller.wait(5) == -9 and not pid_alive(controller.pid)


def test_cluster_mode_leaves_replicas_to_ray() -> None:
    state = FleetState(1, "http://gw", replicas=[status("m-0", 11)], gateway=status("gateway", 10),
                       services=[status("ui", 12)], cluster="ray")  # fmt: skip
    assert fleet_groups(state) == [10, 12]
    state.cluster = "local"
    assert fleet_groups(state) == [10, 11, 12]


def test_one_controller_per_state_dir(tmp_path: Path) -> None:
    write_state(tmp_path / STATE_FILE, FleetState(4242, "http://gw"))
    with (
        fleet_lock(tmp_path),
        pytest.raises(
            FleetAlreadyRunning,
            match=r"already running from .* \(pid 4242\); change it with "
            r"`deepfleet apply -f FILE`, or stop it with `deepfleet down`",
        ),
        fleet_lock(tmp_path),
    ):
        pass
    with fleet_lock(tmp_path):  # released
        pass


def test_model_paths_resolve_folders_and_pass_hub_ids(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    cfg = FleetConfig.model_validate(
        {"models": [{"name": "local", "source": str(folder)},
                    {"name": "hub", "source": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}]}
    )  # fmt: skip
    assert model_paths(cfg) == {
        "local": str(folder.resolve()),
        "hub": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    }


class FakeController:
    """What `serve` uses of a Controller: it publishes `states` in turn, then waits for stop."""

    def __init__(self, url: str, states: list[ReplicaState]) -> None:
        self.state = FleetState(1, url, gateway=status("gateway", 2))
        self.state.replicas = [status("m-0", 3)]
        self._states = states
        self._listeners: list[Callable[[FleetState], None]] = []

    def subscribe(self, listener: Callable[[FleetState], None]) -> None:
        self._listeners.append(listener)

    async def run(self, stop: asyncio.Event) -> None:
        for s in self._states:
            self.state.replicas[0].state = s
            for listener in self._listeners:
                listener(self.state)
            await asyncio.sleep(0.05)
        await stop.wait()


def test_serve_announces_once_the_gateway_routes(ready_server: tuple[str, list[int]]) -> None:
    url, codes = ready_server
    codes[:] = [503, 503, 200]  # the gateway's table lags fleet.json by two polls
    fake = FakeController(url, [ReplicaState.STARTING, ReplicaState.READY])
    events: list[FleetEvent] = []

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(cast(Controller, fake), events.append, stop, ()))
        for _ in range(100):
            if any(isinstance(e, Serving) for e in events):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(main())
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["StateChanged", "StateChanged", "Serving"]
    assert codes == [200]  # asked until it answered 200
