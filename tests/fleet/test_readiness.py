"""When a fleet serves: fleet.json's view and the gateway's own /ready, and waiting for both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deepfleet.fleet.events import FleetEvent, StartProgress
from deepfleet.fleet.readiness import (
    FleetNotReady,
    FleetStartFailed,
    GatewayView,
    gateway_view,
    processes_ready,
    wait_ready,
)
from deepfleet.fleet.state import (
    STATE_FILE,
    FleetState,
    ReplicaState,
    ReplicaStatus,
    write_state,
)

READY, STARTING = ReplicaState.READY, ReplicaState.STARTING


def fleet(gateway: ReplicaState | None, *replicas: ReplicaState, pid: int = 1) -> FleetState:
    gw = ReplicaStatus("gateway", "*", "gateway", "http://gw", gateway) if gateway else None
    reps = [ReplicaStatus(f"m-{i}", "m", "vllm", f"http://e{i}", s) for i, s in enumerate(replicas)]
    return FleetState(controller_pid=pid, gateway_url="http://gw", replicas=reps, gateway=gw)


@pytest.mark.parametrize(
    ("state", "ready"),
    [
        (fleet(READY, READY, READY), True),
        (fleet(READY, READY, STARTING), False),
        (fleet(STARTING, READY), False),
        (fleet(None, READY), False),
        (fleet(READY), False),  # no replica: nothing to serve
        (FleetState(**{**vars(fleet(READY, READY)), "stopping": True}), False),
    ],
)
def test_processes_ready(state: FleetState, ready: bool) -> None:
    assert processes_ready(state) is ready


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_wait_ready_times_out_naming_what_is_not_ready(tmp_path: Path) -> None:
    write_state(tmp_path / STATE_FILE, fleet(READY, READY, STARTING))
    clock, events = FakeClock(), list[FleetEvent]()
    with pytest.raises(FleetNotReady, match=r"not ready after 5s: m-1 is starting$"):
        wait_ready(tmp_path, 5, on_event=events.append, clock=clock, sleep=clock.sleep)
    assert events[0] == StartProgress(1, 2, 0.0)


def test_wait_ready_without_a_state_file_says_so(tmp_path: Path) -> None:
    clock = FakeClock()
    with pytest.raises(FleetNotReady, match=r"no fleet\.json was written yet"):
        wait_ready(tmp_path, 1, clock=clock, sleep=clock.sleep)


def test_wait_ready_waits_for_the_gateway_to_route(tmp_path: Path) -> None:
    """fleet.json says ready before the gateway's table does: not serving until /ready is 200."""
    write_state(tmp_path / STATE_FILE, fleet(READY, READY))
    clock, asked = FakeClock(), list[str]()

    def probe(url: str) -> GatewayView:
        asked.append(url)
        return GatewayView(len(asked) >= 3, "the gateway's /ready answered 503")

    state = wait_ready(tmp_path, 60, probe=probe, clock=clock, sleep=clock.sleep)
    assert state.replicas[0].state is READY and asked == ["http://gw"] * 3
    with pytest.raises(FleetNotReady, match="answered 503"):
        wait_ready(
            tmp_path, 1, probe=lambda u: GatewayView(False, "answered 503"), clock=clock,
            sleep=clock.sleep,
        )  # fmt: skip


def test_wait_ready_ignores_another_process_state_and_reports_its_exit(tmp_path: Path) -> None:
    write_state(tmp_path / STATE_FILE, fleet(READY, READY, pid=1))  # an earlier fleet's file
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    clock = FakeClock()
    with pytest.raises(FleetStartFailed, match=r"stopped during startup \(exit 3\)") as err:
        wait_ready(tmp_path, 60, process=proc, probe=lambda u: GatewayView(True, ""),
                   clock=clock, sleep=clock.sleep)  # fmt: skip
    assert err.value.returncode == 3


def test_gateway_view_against_a_local_server(ready_server: tuple[str, list[int]]) -> None:
    url, _ = ready_server
    first = gateway_view(url)
    assert not first.ready and "503" in first.detail and '"m": 0' in first.detail
    assert gateway_view(url) == GatewayView(True, "")


def test_gateway_view_when_nothing_listens() -> None:
    view = gateway_view("http://127.0.0.1:9", timeout_s=1)
    assert not view.ready and "does not answer" in view.detail
