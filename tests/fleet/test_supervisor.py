"""The supervisor with real child processes (a tiny HTTP server), no engines."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from deepfleet.engines.base import LaunchSpec
from deepfleet.fleet.health import HttpProbe
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.state import ReplicaState, ReplicaStatus
from deepfleet.fleet.supervisor import Supervisor, SupervisorPolicy

SERVER = """
import http.server, sys, os, subprocess
# A grandchild in the same session, like vLLM's engine core: must die with the group.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = not os.path.exists(sys.argv[2])
        self.send_response(200 if healthy else 500); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

FAST = SupervisorPolicy(
    startup_timeout_s=10,
    health_interval_s=0.1,
    unhealthy_after=2,
    backoff_initial_s=0.1,
    backoff_max_s=0.4,
    stop_grace_s=2,
)


async def wait_for(cond: object, within_s: float = 10.0) -> None:
    assert callable(cond)
    for _ in range(int(within_s / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
async def probe() -> AsyncIterator[HttpProbe]:
    p = HttpProbe(1.0)
    yield p
    await p.close()


def make(
    tmp_path: Path, argv: list[str] | None = None, probe: HttpProbe | None = None
) -> tuple[Supervisor, ReplicaStatus]:
    port = free_port()
    status = ReplicaStatus(
        "r0", "m", "test", f"http://127.0.0.1:{port}", log=str(tmp_path / "r0.log")
    )
    spec = LaunchSpec(argv or [sys.executable, "-c", SERVER, str(port), str(tmp_path / "sick")])
    sup = Supervisor(
        status,
        spec,
        status.url + "/health",
        probe=probe,
        on_change=lambda: None,
        policy=FAST,
    )
    return sup, status


def group_alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{p.pid} {p.info['status']}")
        except (ProcessLookupError, psutil.Error):
            continue
    return found


async def test_restart_after_sigkill_and_clean_stop(tmp_path: Path, probe: HttpProbe) -> None:
    sup, status = make(tmp_path, probe=probe)
    task = asyncio.create_task(sup.run())
    await wait_for(lambda: status.state is ReplicaState.READY)
    first = status.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: status.restarts == 1)
    assert status.last_exit == "killed by signal 9"
    await wait_for(lambda: status.state is ReplicaState.READY and status.pid != first)
    assert not group_alive(first)  # the old grandchild went with its group
    second = status.pid
    assert second is not None
    await sup.stop()
    await task
    assert status.state is ReplicaState.STOPPED
    assert not group_alive(second)


async def test_failing_health_checks_restart(tmp_path: Path, probe: HttpProbe) -> None:
    sup, status = make(tmp_path, probe=probe)
    task = asyncio.create_task(sup.run())
    await wait_for(lambda: status.state is ReplicaState.READY)
    (tmp_path / "sick").touch()
    await wait_for(lambda: status.restarts >= 1)
    assert status.last_exit == "health check failed 2 times"
    (tmp_path / "sick").unlink()
    await wait_for(lambda: status.state is ReplicaState.READY)
    await sup.stop()
    await task


async def test_crash_loop_backs_off(tmp_path: Path, probe: HttpProbe) -> None:
    sup, status = make(tmp_path, [sys.executable, "-c", "raise SystemExit(3)"], probe=probe)
    task = asyncio.create_task(sup.run())
    await wait_for(lambda: status.restarts >= 3)
    assert status.last_exit == "exited with code 3 during startup"
    await sup.stop()
    await task
    assert status.state is ReplicaState.STOPPED


async def test_hung_process_is_killed_after_grace(tmp_path: Path, probe: HttpProbe) -> None:
    ignore_term = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    )
    sup, status = make(tmp_path, [sys.executable, "-c", ignore_term], probe=probe)
    task = asyncio.create_task(sup.run())
    await wait_for(lambda: status.pid is not None)
    pid = status.pid
    assert pid is not None
    await asyncio.sleep(0.3)
    await sup.stop()
    await task
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
