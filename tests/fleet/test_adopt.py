"""A controller SIGKILLed under load: the gateway keeps serving, and the next controller adopts
the engines and the gateway (same pids), supervises them (restarts one that dies), and replaces
the ones whose config changed. Real controller and gateway processes, fake engines."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deepfleet.cli.main import app
from deepfleet.fleet import readiness
from deepfleet.fleet.lifecycle import down
from deepfleet.fleet.ports import free_port
from deepfleet.fleet.process import pid_alive
from deepfleet.fleet.state import STATE_FILE, FleetState, ReplicaState, read_state
from tests.helpers.fake_fleet import stream_once


def start_controller(state_dir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    log = (state_dir / "controller.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.adopt_controller", str(state_dir), str(port), *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ready(state_dir: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> FleetState:
    try:
        return readiness.wait_ready(state_dir, timeout_s, process=proc)
    except (readiness.FleetNotReady, readiness.FleetStartFailed) as exc:
        log = (state_dir / "controller.log").read_text()[-3000:]
        raise AssertionError(f"{exc}\n{log}") from None


class Load:
    """Streams one after another through the gateway in a thread, each result timestamped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    outcome = await stream_once(client, self.url)
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.results.append((time.monotonic(), outcome))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    down(tmp_path, timeout_s=10)


def pids(state: FleetState) -> dict[str, int | None]:
    gateway = [state.gateway] if state.gateway else []
    return {r.replica_id: r.pid for r in [*state.replicas, *gateway]}


def test_sigkilled_controller_is_replaced_by_one_that_adopts(state_dir: Path) -> None:
    port = free_port()
    first = start_controller(state_dir, port)
    before = ready(state_dir, first)
    assert before.adopted == [] and len(before.replicas) == 2
    with Load(before.gateway_url) as load:
        time.sleep(1.5)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = time.monotonic()
        time.sleep(3)  # no controller at all: the gateway serves from the last fleet.json
        second = start_controller(state_dir, port)
        after = ready(state_dir, second, timeout_s=10)
        adopted_in = time.monotonic() - killed_at - 3
        time.sleep(1.5)
    assert after.controller_pid == second.pid
    assert pids(after) == pids(before)  # the same engines and gateway: nothing restarted
    assert sorted(after.adopted) == ["gateway", "tiny-0", "tiny-1"]
    print(f"adopted and serving {adopted_in:.2f}s after the new controller was started")
    assert adopted_in < 10
    outcomes = [o for _, o in load.results]
    during = [o for t, o in load.results if killed_at < t < killed_at + 3]
    assert during and set(outcomes) == {"ok"}, outcomes

    # The adopter supervises what it adopted: an engine that dies is started again.
    victim = after.replicas[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = read_state(state_dir / STATE_FILE)
        now = (
            next(r for r in state.replicas if r.replica_id == victim.replica_id) if state else None
        )
        if now and now.state is ReplicaState.READY and now.pid not in (None, victim.pid):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"{victim.replica_id} was not restarted: {now}")
    assert now.restarts == victim.restarts + 1 and "adopted" in (now.last_exit or "")
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
    assert not any(
        pid_alive(p) for p in pids(read_state(state_dir / STATE_FILE) or before).values()
    )


def test_a_changed_config_replaces_engines_and_keeps_the_gateway(state_dir: Path) -> None:
    port = free_port()
    first = start_controller(state_dir, port, "2", "a")
    before = ready(state_dir, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    shown = CliRunner().invoke(app, ["status", "--state-dir", str(state_dir)])
    assert shown.exit_code == 0 and "is not running" in shown.output, shown.output
    assert "3 of its processes still run" in shown.output
    # One replica fewer, another engine argument: both old engines go, the gateway stays.
    second = start_controller(state_dir, port, "1", "b")
    after = ready(state_dir, second, timeout_s=30)
    assert after.adopted == ["gateway"]
    assert after.gateway and before.gateway and after.gateway.pid == before.gateway.pid
    old = [r.pid for r in before.replicas]
    assert after.replicas[0].pid not in old and not any(pid_alive(p) for p in old)
    with httpx.Client(timeout=10) as client:
        r = client.post(
            after.gateway_url + "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 200, r.text
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0


def test_gateways_behind_haproxy_are_adopted_too(state_dir: Path) -> None:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy not installed (scripts/setup-test-deps.sh)")
    port = free_port()
    first = start_controller(state_dir, port, "2", "a", "2")
    before = ready(state_dir, first)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = start_controller(state_dir, port, "2", "a", "2")
    after = ready(state_dir, second, timeout_s=10)
    adopted = ["gateway", "gateway-1", "kv-relay", "lb", "tiny-0", "tiny-1"]
    assert sorted(after.adopted) == adopted
    every = {s.replica_id: s.pid for s in [*after.services, *after.replicas]}
    assert every == {s.replica_id: s.pid for s in [*before.services, *before.replicas]}
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0
